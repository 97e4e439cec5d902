"""Run one model action: validate (pydantic) -> authorize (guild/role policy) -> run -> record.

Every failure becomes a result the model can read ({"error": "..."}); nothing outside the whitelist runs,
and the context (who is asking) comes only from the caller, never from the action.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from engine.jobs.policy import PermissionDenied, authorize
from tools.context import Services, ToolContext
from tools.errors import USER_ERRORS
from tools.offer import Offer, offer_for
from tools.registry import REPLY, Registry, ToolSpec
from tools.repair import repair
from tools.whitelist import REGISTRY

log = logging.getLogger(__name__)
MAX_RESULT_CHARS = 6000


@dataclass
class ToolCall:
    """One attempted tool call: validated args (or the raw ones when rejected), result, whether it ran."""

    name: str
    args: dict[str, Any]
    result: dict[str, Any]
    executed: bool = False
    ms: float = 0.0
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """True when the tool ran and returned a result without an error."""
        return self.executed and "error" not in self.result

    @property
    def error(self) -> str | None:
        """The error text, if any."""
        return self.result.get("error")


def format_validation(err: ValidationError, prefix: str = "") -> str:
    """Pydantic errors as 'field: message' lines joined by '; ' (at most five)."""
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        parts.append(f"{loc or '(root)'}: {str(e['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _short_args(raw: Any) -> dict[str, Any]:
    """A JSON-safe, bounded copy of rejected args for the log."""
    text = json.dumps(raw, default=str)[:500] if raw is not None else "{}"
    return raw if isinstance(raw, dict) and len(text) < 500 else {"raw": text}


class Orchestrator:
    """Validates, authorizes, runs and records tool calls for one deployment."""

    def __init__(
        self,
        services: Services,
        registry: Registry = REGISTRY,
        *,
        log_size: int = 1000,
        recorder: Callable[[ToolContext, ToolCall], Any] | None = None,
    ) -> None:
        self.services = services
        self.registry = registry
        self.log: deque[ToolCall] = deque(maxlen=log_size)
        self.recorder = recorder

    async def choices(self, ctx: ToolContext) -> dict[str, list[str]]:
        """DB-backed allowed values for Choices parameters, as this requester sees them (read once per turn)."""
        cached = ctx.memo.get("choices")
        if cached is None:
            store = self.services.store
            presets = await store.presets.list("image", ctx.user_id, ctx.guild_id)
            cached = ctx.memo["choices"] = {
                "style": await store.library.names("style", ctx.guild_id),
                "preset": [p["name"] for p in presets],
            }
        return cached

    async def authorize(self, ctx: ToolContext, name: str) -> None:
        """PermissionDenied when the guild's policy forbids the tool for the requester's roles."""
        await authorize(self.services.store.settings, ctx.requester, name)

    async def execute(self, ctx: ToolContext, action: Any) -> ToolCall:
        """Run a raw {"tool": name, "args": {...}} action; every failure comes back as an error result."""
        if not isinstance(action, dict):
            return await self._record(
                ctx, ToolCall("(invalid)", {}, {"error": "an action must be a JSON object"})
            )
        name = action.get("tool")
        spec = self.registry.get(name) if isinstance(name, str) else None
        if spec is None:
            shown = str(name)[:64]
            known = ", ".join(self.registry.names)
            why = "reply ends the turn; it is not a tool" if name == REPLY else f"unknown tool '{shown}'"
            return await self._record(
                ctx, ToolCall(shown, _short_args(action.get("args")), {"error": f"{why}; tools: {known}"})
            )
        extra = sorted(set(action) - {"tool", "args"})
        if extra:
            msg = f"unexpected keys {extra} next to 'tool' and 'args'"
            return await self._record(
                ctx, ToolCall(spec.name, _short_args(action.get("args")), {"error": msg})
            )
        return await self.call(ctx, spec.name, action.get("args", {}))

    def offer(self, ctx: ToolContext, *, past: bool, latest_image: bool = False, check: bool = False) -> Offer:
        """The tools and arguments offered for a request in this context (see tools.offer)."""
        has_image = ctx.replied_generation_id is not None or any(a.data for a in ctx.attachments)
        return offer_for(
            self.registry.names, has_image=has_image, past=past, latest_image=latest_image, check=check
        )

    async def call(self, ctx: ToolContext, name: str, args: Any, *, offer: Offer | None = None) -> ToolCall:
        """Check the offer, validate args (bad optional values clamped or dropped with notes), authorize, run."""
        spec = self.registry.get(name)
        if spec is None:
            return await self._record(ctx, ToolCall(str(name)[:64], {}, {"error": f"unknown tool '{name}'"}))
        args = args if args is not None else {}
        refused = offer.refuses(name, args) if offer is not None and isinstance(args, dict) else None
        if refused:
            return await self._record(ctx, ToolCall(name, _short_args(args), {"error": refused}))
        try:
            model = spec.args_model(await self.choices(ctx))
            validated, notes = repair(model, args) if isinstance(args, dict) else (model.model_validate(args), [])
        except ValidationError as e:
            error = f"invalid arguments for {name}: {format_validation(e, 'args')}"
            return await self._record(ctx, ToolCall(name, _short_args(args), {"error": error}))
        values = {k: getattr(validated, k) for k in type(validated).model_fields}
        try:
            await self.authorize(ctx, name)
        except PermissionDenied as e:
            return await self._record(ctx, ToolCall(name, values, {"error": str(e)}))
        call = await self._run(ctx, spec, values)
        if notes:
            call.result["notes"] = [*notes, *call.result.get("notes", [])]
        return await self._record(ctx, call)

    async def reject(self, ctx: ToolContext, call: ToolCall) -> ToolCall:
        """Record an action rejected before reaching a tool (e.g. model output that did not validate)."""
        call.executed = False
        return await self._record(ctx, call)

    async def _run(self, ctx: ToolContext, spec: ToolSpec, values: dict[str, Any]) -> ToolCall:
        t0 = time.perf_counter()
        try:
            result = await spec.func(ctx, **values)
            if not isinstance(result, dict):
                raise TypeError(f"tool {spec.name} returned {type(result).__name__}, not a dict")
            json.dumps(result)
        except USER_ERRORS as e:
            result = {"error": str(e) or type(e).__name__}
        except Exception as e:
            log.exception("tool %s failed", spec.name)
            result = {"error": f"{spec.name} failed unexpectedly ({type(e).__name__}); please try again"}
        ms = (time.perf_counter() - t0) * 1000
        return ToolCall(spec.name, values, result, executed=True, ms=ms)

    async def _record(self, ctx: ToolContext, call: ToolCall) -> ToolCall:
        self.log.append(call)
        log.info(
            "tool call user=%s guild=%s tool=%s executed=%s error=%s",
            ctx.user_id,
            ctx.guild_id,
            call.name,
            call.executed,
            call.error,
        )
        if self.recorder is not None:
            try:
                out = self.recorder(ctx, call)
                if inspect.isawaitable(out):
                    await out
            except Exception:
                log.exception("tool call recorder failed")
        return call


def result_text(call: ToolCall, limit: int = MAX_RESULT_CHARS) -> str:
    """The result as compact JSON for the model, cut to `limit` characters."""
    text = json.dumps(call.result, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit] + "...(cut)"
