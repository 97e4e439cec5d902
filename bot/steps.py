"""The model's two steps (choose a route from a small enum; fill one tool's free-text arguments) and replies.

Each call is built from prompts/agent/steps.toml (instructions and few-shot examples), the reply chain and the
request, fitted to the model's context window in its own tokens (bot/budget.py), and grammar-constrained by
a schema that has only what this step may say.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.budget import Prompt, approx_count, fit
from engine.runtime.llm import ChatModel, Message
from tools.prompts import AgentPrompts
from tools.prompts import fill as fill_template
from tools.registry import grammar_safe

CHOOSE_TOKENS = 16
TALK_TOKENS = 120
FILL_MIN_TOKENS = 32
HISTORY_CHARS = 600
DEFAULT_N_CTX = 4096


@dataclass
class StepInfo:
    """What one model call cost and said (kept in the turn's trace)."""

    step: str
    answer: Any = None
    prompt_tokens: int = 0
    evaluated: int = 0
    completion_tokens: int = 0
    ms: float = 0.0
    gen_ms: float = 0.0
    dropped: int = 0
    shortened: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe summary."""
        out = {k: v for k, v in self.__dict__.items() if v not in (None, 0, 0.0, {}) and k != "extra"}
        return {**out, **self.extra}


def history_messages(lines: Sequence[tuple[str, str, bool]]) -> list[Message]:
    """Earlier messages of the reply chain, oldest first: (author, text, from_bot)."""
    out = []
    for author, text, from_bot in lines:
        body = text if len(text) <= HISTORY_CHARS else text[:HISTORY_CHARS] + " …"
        out.append({"role": "assistant" if from_bot else "user", "content": body if from_bot else f"{author}: {body}"})
    return out


def _nonnull(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without its null branch (a fill step always answers a value)."""
    variants = schema.get("anyOf")
    if variants:
        kept = [v for v in variants if v.get("type") != "null"]
        return dict(kept[0]) if len(kept) == 1 else {"anyOf": kept}
    return dict(schema)


def fill_schema(tool_schema: Mapping[str, Any], params: Sequence[str]) -> dict[str, Any]:
    """The schema of a fill step: only `params`, each required, as the tool's own schema bounds them."""
    props = tool_schema.get("properties", {})
    return {
        "type": "object",
        "properties": {p: _nonnull(props[p]) for p in params},
        "required": list(params),
        "additionalProperties": False,
    }


class ModelSteps:
    """The model calls of a turn, each fitted to the context window and constrained by its own schema."""

    def __init__(self, model: ChatModel, prompts: AgentPrompts, *, max_tokens: int) -> None:
        self.model = model
        self.prompts = prompts
        self.max_tokens = max_tokens
        counter = getattr(model, "count_tokens", None)
        self.count = counter if callable(counter) else approx_count
        self.n_ctx = int(getattr(model, "n_ctx", DEFAULT_N_CTX))

    async def _ask(self, info: StepInfo, prompt: Prompt, schema: dict | None, max_tokens: int) -> Any:
        messages, used = await asyncio.to_thread(fit, prompt, self.count, self.n_ctx - max_tokens)  # tokenizing
        info.dropped, info.shortened = prompt.dropped, prompt.shortened
        t0 = time.perf_counter()
        reply = await self.model.achat(messages, schema, max_tokens=max_tokens)
        info.ms = round((time.perf_counter() - t0) * 1000, 1)
        info.prompt_tokens = reply.prompt_tokens or used
        info.evaluated = reply.prompt_eval_tokens or info.prompt_tokens
        info.completion_tokens = reply.completion_tokens
        info.gen_ms = round(reply.timings.generate_ms, 1)
        return reply

    async def choose(
        self, candidates: Sequence[str], history: list[Message], request: str, notes: list[str]
    ) -> tuple[str, StepInfo]:
        """One route out of `candidates` (the enum of the grammar)."""
        step = self.prompts.steps.choose
        routes = "\n".join(f"- {name}: {text}" for name, text in step.routes.items())
        head: list[Message] = [{"role": "system", "content": fill_template(step.instructions.strip(), routes=routes)}]
        for ex in step.example:
            head += [
                {"role": "user", "content": f"Message: {ex.user}"},
                {"role": "assistant", "content": json.dumps({"route": ex.answer})},
            ]
        schema = {
            "type": "object",
            "properties": {"route": {"enum": list(candidates)}},
            "required": ["route"],
            "additionalProperties": False,
        }
        info = StepInfo("choose", extra={"candidates": list(candidates)})
        prompt = Prompt(head, f"Message: {request}", list(history), list(notes))
        reply = await self._ask(info, prompt, schema, CHOOSE_TOKENS)
        route = reply.data.get("route") if isinstance(reply.data, dict) else None
        if route not in candidates:
            raise ValueError(f"the model chose {route!r}, not one of {list(candidates)}")
        info.answer = route
        return route, info

    async def fill(
        self,
        tool: str,
        schema: dict[str, Any],
        drafts: Mapping[str, str],
        history: list[Message],
        request: str,
        notes: list[str],
        values: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, Any], StepInfo]:
        """The tool's free-text arguments (schema: fill_schema), starting from the rules' drafts."""
        step = self.prompts.steps.fill[tool]
        system = fill_template(step.instructions.strip(), **(values or {}))
        head: list[Message] = [{"role": "system", "content": system}]
        first = next(iter(schema["properties"]))
        for ex in step.example:
            head += [
                {"role": "user", "content": f"Message: {ex.user}\nDraft: {json.dumps({first: ex.draft or ''})}"},
                {"role": "assistant", "content": json.dumps(ex.answer, ensure_ascii=False)},
            ]
        text = f"Message: {request}\nDraft: {json.dumps(dict(drafts), ensure_ascii=False)}"
        draft_tokens = await asyncio.to_thread(self.count, [{"role": "user", "content": json.dumps(dict(drafts))}])
        max_tokens = min(self.max_tokens, max(FILL_MIN_TOKENS, 2 * draft_tokens + 24))
        info = StepInfo(f"fill {tool}")
        reply = await self._ask(info, Prompt(head, text, list(history), list(notes)), grammar_safe(schema), max_tokens)
        if not isinstance(reply.data, dict):
            raise ValueError(f"the model's {tool} arguments are not a JSON object: {reply.text[:120]!r}")
        info.answer = reply.data
        return dict(reply.data), info

    async def talk(self, system: str, history: list[Message], request: str, notes: list[str]) -> tuple[str, StepInfo]:
        """A reply in words (no tool): free text, cut to the reply limit by the caller."""
        info = StepInfo("reply")
        prompt = Prompt([{"role": "system", "content": system}], request, list(history), list(notes))
        reply = await self._ask(info, prompt, None, min(self.max_tokens, TALK_TOKENS))
        info.answer = reply.text[:200]
        return reply.text.strip(), info
