"""The narrow chat interface every LLM backend (real or fake) implements, its reply and its errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, TypeVar, Unpack, runtime_checkable

from pydantic import BaseModel, ValidationError

Message = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


class ChatOptions(TypedDict, total=False):
    """Per-call options of chat()/achat(): most tokens to write, sampling temperature, a stop check."""

    max_tokens: int | None
    temperature: float | None
    abort: Callable[[], bool] | None


class LlmError(RuntimeError):
    """Base class for LLM runtime errors; the message is meant for humans."""


class InvalidMessages(LlmError, ValueError):
    """The messages cannot be sent to the model (bad shape, bad image, non-data URL...)."""


class NoVisionProjector(InvalidMessages):
    """An image was sent to a preset that has no mmproj."""


class ModelNotLoaded(LlmError):
    """chat() was called while the model is not loaded; only the arbiter loads models."""


class GenerationAborted(LlmError):
    """chat(abort=...) stopped early because abort() turned true; `tokens` is how many it had generated."""

    def __init__(self, message: str, tokens: int = 0) -> None:
        super().__init__(message)
        self.tokens = tokens


class BadAction(LlmError):
    """The model's structured output is not valid JSON or does not validate; `text` is what it said."""

    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent: prompt evaluation, token generation, and the whole call (wall clock)."""

    prompt_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class Reply:
    """One model answer: its text, the parsed JSON when a schema was given, token counts and timings.

    prompt_tokens is the whole prompt; prompt_eval_tokens is how many of them were actually evaluated
    (the rest came from the reused KV-cache prefix).
    """

    text: str
    data: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_eval_tokens: int = 0
    finish_reason: str = "stop"
    timings: Timings = field(default_factory=Timings)


@runtime_checkable
class ChatModel(Protocol):
    """chat() is blocking (call it off the event loop); achat() runs it in a thread."""

    def chat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """Answer the conversation; with a schema the reply's data is the parsed JSON."""
        ...

    async def achat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """chat() in a worker thread."""
        ...


def parse_json(text: str) -> Any:
    """json.loads the model's output or raise BadAction quoting it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        short = text if len(text) <= 200 else text[:200] + "..."
        raise BadAction(
            f"the model's output is not valid JSON ({e.msg} at char {e.pos}): {short!r}", text
        ) from None


def validated(reply: Reply, model: type[M]) -> M:
    """Re-validate a schema-constrained reply with pydantic; BadAction carries the validation message."""
    data = reply.data if reply.data is not None else parse_json(reply.text)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise BadAction(f"the model's action is invalid: {problems}", reply.text) from None
