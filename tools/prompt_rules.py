"""The validated shapes of prompts/agent/router.toml (pre-router rules) and steps.toml (two-step decision)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.runtime.diffusion.request import ASPECTS

EXTRA_ROUTES = ("reply", "explain")  # routes that are not tools: answer in words, explain the last turn
Text = Annotated[str, Field(min_length=1, max_length=4000)]
Word = Annotated[str, Field(min_length=1, max_length=60)]
Phrase = Annotated[str, Field(min_length=1, max_length=1200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def compiled(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The patterns, each checked to compile (ValueError naming the bad one)."""
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"bad regular expression {p!r}: {e}") from None
    return patterns


class Decide(Strict):
    min_score: Annotated[float, Field(gt=0)]
    min_margin: Annotated[float, Field(ge=0)]
    candidate_score: Annotated[float, Field(gt=0)]


class Signal(Strict):
    """Words or phrases that add `weight` to one route (`needs_image`: only with an image in the turn)."""

    route: Annotated[str, Field(min_length=1, max_length=40)]
    weight: Annotated[float, Field(gt=0, le=20)]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    words: tuple[Word, ...] = ()
    fuzzy: bool = True  # words of 5+ letters also match with one typo
    phrases: tuple[Phrase, ...] = ()
    with_words: tuple[Word, ...] = ()  # one of these must be present too (AND)
    unless_words: tuple[Word, ...] = ()  # none of these may be present
    unless_routes: tuple[str, ...] = ()  # does not count when one of these routes scored too
    after_prompt: bool = False  # only right after the assistant offered a prompt (a quoted one in its last line)
    needs_image: bool = False
    about_image: bool = False  # only with an image, or when the request is about the user's latest image
    intent: bool = False  # fires when the message asks for control / reference / outpaint of the image
    style: bool = False  # fires when a library style is named (with phrases: both must match)
    asks_to_draw: bool = False  # an explicit request for a picture ("draw", "make me a", "like my X but")

    @field_validator("phrases")
    @classmethod
    def _phrases(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return compiled(v)

    @model_validator(mode="after")
    def _fires(self) -> Signal:
        if not (self.words or self.phrases or self.intent or self.style):
            raise ValueError(f"signal {self.name!r} has no words, phrases, intent or style to fire on")
        return self


class Extract(Strict):
    latest: tuple[Phrase, ...]
    past: tuple[Phrase, ...]
    lead: tuple[Phrase, ...]
    lead_words: tuple[Word, ...]
    real_words: tuple[Word, ...]
    filler: tuple[Phrase, ...]
    query_stop: tuple[Word, ...]
    aspect: dict[str, tuple[Word, ...]]
    count_words: dict[str, Annotated[int, Field(ge=1, le=100)]]
    style_aliases: dict[Word, Word]
    best_of: tuple[Phrase, ...] = ()  # "... and pick the best": generate's best_of

    @field_validator("lead", "filler", "latest", "past", "best_of")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return compiled(v)

    @field_validator("aspect")
    @classmethod
    def _aspects(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        unknown = sorted(set(v) - set(ASPECTS))
        if unknown:
            raise ValueError(f"unknown aspect ratios {unknown}; known: {', '.join(ASPECTS)}")
        return v


class RouterFile(Strict):
    """prompts/agent/router.toml."""

    decide: Decide
    signal: tuple[Signal, ...]
    extract: Extract

    def check_routes(self, tool_names: tuple[str, ...]) -> None:
        """ValueError naming a signal whose route is neither a tool nor reply/explain."""
        known = (*tool_names, *EXTRA_ROUTES)
        for s in self.signal:
            if s.route not in known:
                raise ValueError(f"signal {s.name!r}: unknown route {s.route!r}; known: {', '.join(known)}")


class Example(Strict):
    """One few-shot turn: the user's message, the draft the rules made of it, and the expected answer."""

    user: Text
    draft: str | None = None
    answer: str | dict[str, str]


class ChooseStep(Strict):
    instructions: Text
    routes: dict[str, Annotated[str, Field(min_length=1, max_length=200)]]
    example: tuple[Example, ...] = ()

    @model_validator(mode="after")
    def _answers(self) -> ChooseStep:
        for ex in self.example:
            if not isinstance(ex.answer, str) or ex.answer not in self.routes:
                raise ValueError(f"choose example {ex.user!r}: answer must be one of {sorted(self.routes)}")
        return self


class FillStep(Strict):
    instructions: Text
    example: tuple[Example, ...] = ()

    @model_validator(mode="after")
    def _answers(self) -> FillStep:
        for ex in self.example:
            if not isinstance(ex.answer, dict):
                raise ValueError(f"fill example {ex.user!r}: answer must be a table of arguments")
        return self


class StepsFile(Strict):
    """prompts/agent/steps.toml."""

    choose: ChooseStep
    fill: dict[str, FillStep]

    def check_tools(self, tool_names: tuple[str, ...]) -> None:
        """ValueError when routes or fill steps do not match the whitelisted tools exactly."""
        want = {*tool_names, "reply"}
        if set(self.choose.routes) != want:
            raise ValueError(f"choose.routes must be exactly {sorted(want)}; got {sorted(self.choose.routes)}")
        if set(self.fill) != set(tool_names):
            raise ValueError(f"fill must have one step per tool {sorted(tool_names)}; got {sorted(self.fill)}")
