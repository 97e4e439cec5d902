"""The agent loop: the LLM picks one validated action at a time; the orchestrator runs whitelisted tools.

Bounded by settings.agent.max_tool_calls and max_wall_s. Every LLM call goes through achat (off the loop).
Note: a timed-out LLM call keeps its worker thread busy until llama.cpp returns; the turn itself ends at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import RootModel

from bot.conversation import ChatLine, Turn, history_messages, request_message, system_prompt
from bot.intents import Intent, detect
from engine.config import Settings
from engine.llm import BadAction, ChatModel, LlmError, validated
from tools.common import job_images, summary, usable_generation
from tools.context import ToolContext, ToolError
from tools.orchestrator import Orchestrator, ToolCall, result_text
from tools.prompts import AgentPrompts, load_agent_prompts
from tools.registry import REPLY

__all__ = ["Agent", "AgentResult", "ChatLine", "Turn"]
log = logging.getLogger(__name__)
MAX_FOLLOW_UPS = 3
REPLY_NOTE_KEYS = ("id", "prompt", "seed", "preset", "style")


@dataclass
class AgentResult:
    """What a turn produced. `reply` is raw text: the front must send it with mentions disabled."""

    reply: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)
    stopped: str | None = None  # "max_tool_calls", "max_wall_s" or "model_error"
    decisions: int = 0


class _Stop(Exception):
    """Internal: end the turn with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Agent:
    """One agent per deployment; run() handles one turn and may be called concurrently."""

    def __init__(
        self,
        chat_model: ChatModel,
        orchestrator: Orchestrator,
        settings: Settings,
        *,
        prompts: AgentPrompts | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.model = chat_model
        self.orchestrator = orchestrator
        self.settings = settings
        self.prompts = prompts or load_agent_prompts(tool_names=orchestrator.registry.names)
        self.max_tokens = max_tokens or settings.llm.max_tokens
        self._check = [re.compile(p, re.IGNORECASE) for p in self.prompts.agent.check.patterns]

    @staticmethod
    def intent(turn: Turn) -> Intent | None:
        """What the request asks of the user's image ("same pose as this", "zoom out"); None without an image."""
        return detect(turn.text) if turn.has_image else None

    def context(self, turn: Turn) -> ToolContext:
        """The reserved tool context, built only from the platform's turn data (and rules on its text)."""
        intent = self.intent(turn)
        return ToolContext(
            services=self.orchestrator.services,
            user_id=turn.user_id,
            guild_id=turn.guild_id,
            channel_id=turn.channel_id,
            roles=tuple(turn.roles),
            attachments=tuple(turn.attachments),
            replied_generation_id=turn.replied_generation_id,
            reply_to=dict(turn.reply_to),
            defaults=intent.tool_defaults() if intent else {},
        )

    def wants_check(self, text: str) -> bool:
        """True when the request asks to check the result (self-critique once, refine once)."""
        return any(p.search(text) for p in self._check)

    async def run(self, turn: Turn) -> AgentResult:
        """Answer one turn: decide, act, observe, until a reply or a limit."""
        deadline = time.monotonic() + self.settings.agent.max_wall_s
        result = AgentResult()
        ctx = self.context(turn)
        try:
            await asyncio.wait_for(self._loop(ctx, turn, result, deadline), self._left(deadline))
        except _Stop as stop:
            result.stopped, result.reply = stop.reason, self._with_jobs(str(stop), result)
        except TimeoutError:
            result.stopped = "max_wall_s"
            msg = self.prompts.message("stopped_time", seconds=f"{self.settings.agent.max_wall_s:g}")
            result.reply = self._with_jobs(msg, result)
        result.follow_ups = self._follow_ups(result)
        return result

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    async def _loop(self, ctx: ToolContext, turn: Turn, result: AgentResult, deadline: float) -> None:
        schema, action_model = await self.orchestrator.action_spec(ctx)
        messages = await self.build_messages(ctx, turn)
        check = self.wants_check(turn.text)
        limit = self.settings.agent.max_tool_calls
        while True:
            if len(result.tool_calls) >= limit:
                raise _Stop("max_tool_calls", self.prompts.message("stopped_steps", n=limit))
            action = await self._decide(ctx, messages, schema, action_model, result)
            if isinstance(action, ToolCall):  # the model's output did not validate; nothing ran
                await self._observe(action, messages, result)
                continue
            if action.tool == REPLY:
                result.reply = self._with_jobs(action.text, result)
                return
            messages.append(
                {"role": "assistant", "content": json.dumps(action.model_dump(), ensure_ascii=False)}
            )
            raw = {"tool": action.tool, "args": action.args.model_dump(exclude_unset=True)}
            call = await self.orchestrator.execute(ctx, raw)
            await self._observe(call, messages, result)
            if check and call.ok and call.name == "generate":
                check = False
                await self._self_check(ctx, call, messages, result)

    async def _decide(
        self,
        ctx: ToolContext,
        messages: list[dict],
        schema: dict,
        action_model: type[RootModel],
        result: AgentResult,
    ) -> Any:
        """One validated action from the model, or a rejected (never executed) ToolCall."""
        result.decisions += 1
        try:
            reply = await self.model.achat(messages, schema, max_tokens=self.max_tokens)
            return validated(reply, action_model).root
        except BadAction as e:
            data = _loads(e.text)
            name = data.get("tool") if isinstance(data, dict) else None
            messages.append({"role": "assistant", "content": e.text[:500] or "(nothing)"})
            shown = str(name)[:64] if name is not None else "(invalid)"
            call = ToolCall(shown, {}, {"error": f"your action was rejected: {e}"})
            return await self.orchestrator.reject(ctx, call)
        except (LlmError, ValueError) as e:
            log.warning("agent: model call failed: %s", e)
            raise _Stop("model_error", self.prompts.message("model_failed", error=str(e)[:200])) from None

    async def _observe(self, call: ToolCall, messages: list[dict], result: AgentResult) -> None:
        """Keep a (recorded) call in the turn's result and show its result to the model."""
        result.tool_calls.append(call)
        if call.ok:
            result.job_ids += [j for j in call.result.get("job_ids", []) if j not in result.job_ids]
            for item in call.result.get("results", []):
                if item.get("thumbnail"):
                    result.images.append(item["thumbnail"])
        text = self.prompts.message("tool_result", tool=call.name, result=result_text(call))
        messages.append({"role": "user", "content": text})

    async def _self_check(
        self, ctx: ToolContext, call: ToolCall, messages: list[dict], result: AgentResult
    ) -> None:
        """Wait for the first job, critique it once, and let the model refine once."""
        job_id = call.result["job_ids"][0]
        if len(result.tool_calls) >= self.settings.agent.max_tool_calls:
            return
        critique = await self.orchestrator.call(ctx, "critique", {"job_id": job_id})
        await self._observe(critique, messages, result)
        job = await self.orchestrator.services.jobs.get(job_id)
        if job is not None and job.state == "done":
            result.images += [p for p in job_images(job) if p not in result.images]
        messages.append({"role": "user", "content": self.prompts.message("check_result", job_id=job_id)})

    async def build_messages(self, ctx: ToolContext, turn: Turn) -> list[dict]:
        """System prompt (tools, known names), the reply chain, then the request with context notes."""
        choices = await self.orchestrator.choices(ctx)
        system = system_prompt(self.prompts, self.orchestrator.registry, choices)
        notes = []
        if turn.replied_generation_id is not None:
            try:
                gen = summary(await usable_generation(ctx, turn.replied_generation_id))
                notes.append(self.prompts.message("context_reply", **{k: gen[k] for k in REPLY_NOTE_KEYS}))
            except ToolError as e:
                notes.append(f"The user replied to an image that cannot be used ({e}).")
        if turn.attachments:
            names = ", ".join(a.name[:64] for a in turn.attachments[:4])
            notes.append(self.prompts.message("context_attachments", n=len(turn.attachments), names=names))
        intent = self.intent(turn)
        if intent:
            notes.append(intent.hint())
        history = history_messages(turn, self.settings.agent.history_turns)
        return [{"role": "system", "content": system}, *history, request_message(turn, notes)]

    def _with_jobs(self, text: str, result: AgentResult) -> str:
        if not result.job_ids or any(str(j) in text for j in result.job_ids):
            return text
        ids = ", ".join(f"#{j}" for j in result.job_ids)
        return f"{text}\n{self.prompts.message('queued', n=len(result.job_ids), ids=ids)}"

    def _follow_ups(self, result: AgentResult) -> list[str]:
        out: list[str] = []
        for call in result.tool_calls:
            if call.ok:
                out += self.prompts.agent.follow_ups.get(call.name, ())
        return list(dict.fromkeys(out))[:MAX_FOLLOW_UPS]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None
