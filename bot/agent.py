"""The agent: read the request by rules, decide in two steps, act through the orchestrator, answer from results.

1. bot.understand reads the request: route scores, and the arguments its words give (count, aspect, seed,
   negative, style, preset), plus drafts of the free text (prompt, query, focus).
2. The orchestrator offers tools by context (tools.offer): critique and image arguments only with an image,
   search_history only when the request points at the past.
3. Step one, the route: taken by the rules when one is clearly ahead (bot.plan.prior), else chosen by the model
   from a small enum of the plausible routes. Step two: the model writes only that tool's free-text arguments,
   with that tool's small schema; the rest come from the user's words. The orchestrator validates everything.
4. A few rule-based follow-ups (search -> generate from it, check -> critique -> refine); a call identical to
   an earlier one in the turn is never run again; limits end the turn with a list of what was tried.
5. The reply is composed from the tool results; the turn (decisions, calls, timings) is stored for "why?".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bot.agent_memory import continued, explained_turn, record
from bot.agent_result import AgentResult
from bot.agent_text import compose, explain_text, outcome, short_args, stopped_text
from bot.budget import ContextTooSmall
from bot.conversation import ChatLine, Turn
from bot.plan import (
    FILLS,
    Prior,
    content_words,
    edits_image,
    faithful,
    follow,
    instruction_edit,
    prefill,
    prior,
)
from bot.steps import ModelSteps, StepInfo, fill_schema, history_messages
from bot.understand import Facts, read
from bot.wording import clean_focus
from engine.config import Settings
from engine.runtime.llm import BadAction, ChatModel, LlmError
from tools.common import summary, usable_generation
from tools.context import ToolContext, ToolError
from tools.offer import Offer
from tools.orchestrator import Orchestrator, ToolCall, result_text
from tools.prompts import AgentPrompts, fill, load_agent_prompts

__all__ = ["Agent", "AgentResult", "ChatLine", "Turn"]
log = logging.getLogger(__name__)
MAX_FOLLOW_UPS = 3
RESULT_NOTE_CHARS = 1500
INVENTED = re.compile(r"\bjob\s*#?\s*\d+|\bqueued\b|^\s*drawing\s+\"|\{\s*\"(?:tool|route|prompt)\"", re.I)
INTENT_WORDS = frozenset(["use", "pose", "zoom", "out", "extend", "style", "composition", "keep", "copy", "right",
                          "left", "up", "down", "image", "photo", "picture", "depth", "edges", "outline", "layout"])  # fmt: skip
RESULT = re.compile(r"\bjob\s*#?\d+|\bDrawing \"")  # our own line about a picture just made
VAGUE = frozenset(["more", "again", "another", "version", "versions", "ones", "those", "these", "them", "same", "make", "please", "now", "that", "this", "it", "thing", "things", "one", "copies", "times", "yes", "yeah", "sure", "okay", "for", "ahead", "please"])


class _Stop(Exception):
    """Internal: end the turn with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Turn:
    """The state of one turn while it runs."""

    ctx: ToolContext
    facts: Facts
    offer: Offer
    choices: dict[str, list[str]]
    history: list[dict]
    request: str
    notes: list[str]
    replied_prompt: str = ""
    seen: set[str] = field(default_factory=set)
    done: dict[str, ToolCall] = field(default_factory=dict)  # "continue": calls the stopped turn already made
    ran: int = 0


def call_key(name: str, args: dict[str, Any]) -> str:
    """The identity of a call: its tool and its arguments (None values ignored)."""
    kept = {k: v for k, v in sorted(args.items()) if v is not None}
    return f"{name}:{json.dumps(kept, sort_keys=True, default=str, ensure_ascii=False)}"


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
        use_rules: bool = True,
    ) -> None:
        self.model = chat_model
        self.orchestrator = orchestrator
        self.settings = settings
        self.prompts = prompts or load_agent_prompts(tool_names=orchestrator.registry.names)
        self.steps = ModelSteps(chat_model, self.prompts, max_tokens=max_tokens or settings.llm.max_tokens)
        self.use_rules = use_rules  # False: the model picks every route (to measure what the rules add)
        self._check = [re.compile(p, re.IGNORECASE) for p in self.prompts.agent.check.patterns]

    def context(self, turn: Turn) -> ToolContext:
        """The reserved tool context, built only from the platform's turn data."""
        return ToolContext(
            services=self.orchestrator.services, user_id=turn.user_id, guild_id=turn.guild_id,
            channel_id=turn.channel_id, roles=tuple(turn.roles), attachments=tuple(turn.attachments),
            replied_generation_id=turn.replied_generation_id, reply_to=dict(turn.reply_to),
        )  # fmt: skip

    def wants_check(self, text: str) -> bool:
        """True when the request asks to check the result (critique once, refine once)."""
        return any(p.search(text) for p in self._check)

    async def run(self, turn: Turn) -> AgentResult:
        """Answer one turn within settings.agent limits; the turn is stored for "why did you do that?"."""
        t0 = time.monotonic()
        result = AgentResult()
        try:
            await asyncio.wait_for(self._turn(turn, result), self.settings.agent.max_wall_s)
        except _Stop as stop:
            result.stopped = stop.reason
            if stop.reason == "repeat":
                result.reply = "\n".join(x for x in (compose(self.prompts, result.tool_calls, []), str(stop)) if x)
            elif stop.reason == "max_tool_calls":
                result.reply = stopped_text(self.prompts, str(stop), result.tool_calls)
            else:
                result.reply = str(stop)
        except TimeoutError:
            result.stopped = "max_wall_s"
            msg = self.prompts.message("stopped_time", seconds=f"{self.settings.agent.max_wall_s:g}")
            result.reply = stopped_text(self.prompts, msg, result.tool_calls)
        result.follow_ups = self._follow_ups(result)
        await record(self.orchestrator.services.store, turn, result, (time.monotonic() - t0) * 1000)
        return result

    async def _turn(self, turn: Turn, result: AgentResult) -> None:
        ctx = self.context(turn)
        choices = await self.orchestrator.choices(ctx)
        request, done = await continued(ctx.store, ctx.user_id, ctx.channel_id, turn.text)
        facts = await asyncio.to_thread(self._read, request, turn, choices)  # rules are CPU work: off the loop
        check = self.wants_check(request)
        offer = self.orchestrator.offer(ctx, past=facts.past, latest_image=facts.latest_image, check=check)
        routes = [*offer.tools, "reply", "explain"]
        pri = prior(facts, routes, self.prompts.router.decide) if self.use_rules else Prior(
            None, (*offer.tools, "reply"), "rules off"
        )
        history = history_messages(_lines(turn, self.settings.agent.history_turns))
        state = _Turn(ctx, facts, offer, choices, history, request, [], done=done)
        await self._context_notes(state, turn)
        result.why, result.read_from = pri.why, dict(facts.read_from)
        route, by = (pri.route, "rules") if pri.route else (await self._choose(state, pri, result), "model")
        result.route, result.decided_by = route, by
        if route == "explain":
            shown = await explained_turn(ctx.store, ctx.user_id, ctx.channel_id, ctx.replied_generation_id)
            result.reply = explain_text(self.prompts, shown)
            return
        if route == "reply":
            result.reply = await self._talk(state, result)
            return
        step: tuple[str, dict[str, Any], dict[str, str]] | None = (
            route, self._prefill(route, state), self._drafts(route, state, turn)
        )  # fmt: skip
        while step is not None:
            call = await self._act(state, *step, result)
            if call is None:
                return
            step = follow(facts, call, result.tool_calls, self.prompts.router.decide, check)
            if step is not None:  # what the words said (count, style, ...) holds for the follow-up too
                step = (step[0], {**self._prefill(step[0], state), **step[1]}, step[2])
        result.reply = compose(self.prompts, result.tool_calls, result.notes)

    # ---- decisions -------------------------------------------------------------------------------------

    async def _choose(self, state: _Turn, pri: Prior, result: AgentResult) -> str:
        """Step one by the model: a route out of the plausible candidates."""
        result.decisions += 1
        try:
            route, info = await self.steps.choose(pri.candidates, state.history, state.request, state.notes)
        except ContextTooSmall as e:
            raise _Stop("context", self.prompts.message("context_too_small", error=str(e))) from None
        except (BadAction, ValueError) as e:
            route, info = pri.candidates[0], StepInfo("choose", error=str(e)[:200], answer=pri.candidates[0])
        except LlmError as e:
            raise _Stop("model_error", self.prompts.message("model_failed", error=str(e)[:200])) from None
        self._step(result, info)
        return route

    def _prefill(self, tool: str, state: _Turn) -> dict[str, Any]:
        spec = self.orchestrator.registry.get(tool)
        params = state.offer.params(tool, tuple(p.name for p in spec.params)) if spec else ()
        return prefill(tool, state.facts, params, state.ctx.replied_generation_id)

    def _drafts(self, tool: str, state: _Turn, turn: Turn) -> dict[str, str]:
        f = state.facts
        if tool == "generate":
            if instruction_edit(f) and self.settings.generation.edit_preset:  # the model follows the words
                return {"prompt": f.text.strip()}
            if edits_image(f) and state.replied_prompt:
                return {"prompt": f"{state.replied_prompt}, {f.change}" if f.change else state.replied_prompt}
            draft = f.change if edits_image(f) else f.prompt
            style_words = content_words(f.read_from.get("style", ""))
            if not (content_words(draft) - VAGUE - INTENT_WORDS - style_words):  # "use this pose", "2 more"
                earlier = state.replied_prompt if f.intent else self._earlier_prompt(turn, state)
                draft = earlier or draft
            return {"prompt": draft}
        if tool == "search_history":
            return {"query": f.query}
        if tool in ("enhance_prompt", "apply_style"):
            return {"prompt": f.quoted or f.prompt}
        return {"focus": f.focus}

    def _read(self, request: str, turn: Turn, choices: dict[str, list[str]]) -> Facts:
        recent = self._recent_result(turn, choices)
        last_bot = next((line.content for line in reversed(turn.conversation[:-1]) if line.from_bot), "")
        offered = bool(re.search(r"\"[^\"]{3,400}\"", last_bot))
        return read(request, rules=self.prompts.router, has_image=turn.has_image, styles=choices["style"],
                    presets=choices["preset"], recent_result=recent, offered_prompt=offered)  # fmt: skip

    def _recent_result(self, turn: Turn, choices: dict[str, list[str]]) -> bool:
        """True when the conversation just made a picture (so "how does it look?" is about it)."""
        for line in turn.conversation[-5:-1]:
            if line.from_bot and RESULT.search(line.content):
                return True
            if not line.from_bot:
                f = read(line.content, rules=self.prompts.router, has_image=False, styles=choices["style"])
                if f.ranked() and f.ranked()[0][0] == "generate":
                    return True
        return False

    def _earlier_prompt(self, turn: Turn, state: _Turn) -> str:
        """The subject of the conversation so far ("now make 2 of those"): our last quoted prompt, or a request."""
        for line in reversed(turn.conversation[:-1]):
            if line.from_bot:
                m = re.search(r"\"([^\"]{3,400})\"", line.content)
                if m:
                    return m.group(1)
                continue
            f = read(line.content, rules=self.prompts.router, has_image=False, styles=state.choices["style"])
            if f.scores.get("generate", 0) >= self.prompts.router.decide.min_score and content_words(f.prompt):
                return f.prompt
        return ""

    async def _fill(
        self, state: _Turn, tool: str, args: dict[str, Any], drafts: dict[str, str], result: AgentResult,
        error: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Step two: the tool's free-text arguments from the model (the drafts when its answer is unusable)."""
        spec = self.orchestrator.registry.get(tool)
        params = state.offer.params(tool, tuple(p.name for p in spec.params))
        fills = [p for p in FILLS.get(tool, ()) if p in params and p not in args]
        if not fills or not self._needs_model(tool, drafts, state, args):
            return {p: drafts[p] for p in fills if drafts.get(p)}
        schema = fill_schema(spec.args_schema(state.choices), fills)
        notes = [*state.notes, f"Your last answer was rejected: {error}"] if error else state.notes
        values = {"styles": ", ".join(state.choices.get("style", [])) or "(none)"}
        result.decisions += 1
        try:
            answer, info = await self.steps.fill(
                tool, schema, {p: drafts.get(p, "") for p in fills}, state.history, state.request, notes, values
            )
        except ContextTooSmall as e:
            raise _Stop("context", self.prompts.message("context_too_small", error=str(e))) from None
        except (BadAction, ValueError) as e:
            answer, info = {}, StepInfo(f"fill {tool}", error=str(e)[:200])
        except LlmError as e:
            raise _Stop("model_error", self.prompts.message("model_failed", error=str(e)[:200])) from None
        out: dict[str, Any] = {}
        for p in fills:
            value, draft = answer.get(p), drafts.get(p, "")
            must = state.facts.change if tool == "generate" and edits_image(state.facts) else ""
            if p in ("prompt", "query") and draft and not faithful(draft, str(value or ""), must):
                info.extra.setdefault("kept_draft", []).append(p)
                value = draft
            if p == "focus":
                value = clean_focus(str(value or "")) or draft
            if value in (None, ""):
                value = draft or None
            if value is not None:
                out[p] = value
        self._step(result, info)
        return out

    @staticmethod
    def _needs_model(tool: str, drafts: dict[str, str], state: _Turn, args: dict[str, Any]) -> bool:
        if tool == "search_history":
            return bool(drafts.get("query"))
        if tool == "critique":  # a self-check (job_id) looks at the match; a short ask has no focus
            return "job_id" not in args and not drafts.get("focus") and len(state.request.split()) >= 7
        return True

    async def _act(
        self, state: _Turn, tool: str, args: dict[str, Any], drafts: dict[str, str], result: AgentResult
    ) -> ToolCall | None:
        """Fill, then run one call (once more after invalid arguments, with the error shown to the model)."""
        args = {**args, **await self._fill(state, tool, args, drafts, result)}
        if tool == "generate" and not args.get("prompt"):
            result.reply = self.prompts.message("talk_fallback")
            return None
        call = await self._call(state, tool, args, result)
        if not call.executed and call.error and call.error.startswith("invalid arguments") and FILLS.get(tool):
            base = {k: v for k, v in args.items() if k not in FILLS[tool]}
            retry = {**base, **await self._fill(state, tool, base, drafts, result, error=call.error)}
            call = await self._call(state, tool, retry, result)
        return call

    async def _call(self, state: _Turn, tool: str, args: dict[str, Any], result: AgentResult) -> ToolCall:
        """Run one call through the orchestrator, unless it repeats an earlier one or the limit is reached."""
        key = call_key(tool, args)
        if key in state.seen:
            raise _Stop("repeat", self.prompts.message("stopped_repeat", tool=tool))
        state.seen.add(key)
        if key in state.done:  # "continue": made by the stopped turn, not run again
            call = state.done.pop(key)
            result.tool_calls.append(call)
            result.steps.append({"call": tool, "args": short_args(call.args), "outcome": "done earlier", "key": key})
            return call
        limit = self.settings.agent.max_tool_calls
        if state.ran >= limit:
            raise _Stop("max_tool_calls", self.prompts.message("stopped_steps", n=limit))
        state.ran += 1
        call = await self.orchestrator.call(state.ctx, tool, args, offer=state.offer)
        result.tool_calls.append(call)
        if call.ok:
            result.job_ids += [j for j in call.result.get("job_ids", []) if j not in result.job_ids]
            result.images += [i["thumbnail"] for i in call.result.get("results", []) if i.get("thumbnail")]
        result.steps.append({"call": tool, "args": short_args(call.args), "outcome": outcome(call),
                             "ms": round(call.ms, 1), "key": key, "full": call.args, "result": call.result,
                             "executed": call.executed})  # fmt: skip
        state.notes.append(f"Result of {tool}: {result_text(call, RESULT_NOTE_CHARS)}")  # for the next step
        return call

    async def _talk(self, state: _Turn, result: AgentResult) -> str:
        """A reply in words by the model (greetings, questions, refusals)."""
        registry = self.orchestrator.registry
        notes = self.prompts.tool_notes
        tools = "\n".join(f"- {s.name}: {s.description} {notes.get(s.name, '')}".rstrip() for s in registry.specs)
        from engine.runtime.diffusion.request import ASPECTS

        system = fill(self.prompts.system, tools=tools, styles=", ".join(state.choices["style"]) or "(none)",
                      presets=", ".join(state.choices["preset"]) or "(none)", aspects=", ".join(ASPECTS))  # fmt: skip
        result.decisions += 1
        users_only = [m for m in state.history if m["role"] == "user"]  # tiny models parrot our own lines
        try:
            text, info = await self.steps.talk(system, users_only, state.request, state.notes)
        except ContextTooSmall as e:
            raise _Stop("context", self.prompts.message("context_too_small", error=str(e))) from None
        except LlmError as e:
            raise _Stop("model_error", self.prompts.message("model_failed", error=str(e)[:200])) from None
        self._step(result, info)
        if INVENTED.search(text):  # a reply in words never made or found anything
            info.extra["replaced"] = text[:120]
            text = ""
        return text[: registry.reply_max_chars].strip() or self.prompts.message("talk_fallback")

    # ---- context, continuation, records -------------------------------------------------------------

    async def _context_notes(self, state: _Turn, turn: Turn) -> None:
        if turn.replied_generation_id is not None:
            try:
                gen = summary(await usable_generation(state.ctx, turn.replied_generation_id))
                state.replied_prompt = str(gen["prompt"])
                keys = ("id", "prompt", "seed", "preset", "style")
                state.notes.append("Context: " + self.prompts.message("context_reply", **{k: gen[k] for k in keys}))
            except ToolError as e:
                state.notes.append(f"Context: the user replied to an image that cannot be used ({e}).")
        if turn.attachments:
            names = ", ".join(a.name[:64] for a in turn.attachments[:4])
            note = self.prompts.message("context_attachments", n=len(turn.attachments), names=names)
            state.notes.append(f"Context: {note}")

    def _step(self, result: AgentResult, info: StepInfo) -> None:
        result.steps.append(info.as_dict())
        result.prompt_tokens += info.evaluated

    def _follow_ups(self, result: AgentResult) -> list[str]:
        out: list[str] = list(self.prompts.agent.follow_ups.get("stopped", ())) if result.stopped else []
        for call in result.tool_calls:
            if call.ok:
                out += self.prompts.agent.follow_ups.get(call.name, ())
        return list(dict.fromkeys(out))[:MAX_FOLLOW_UPS]


def _lines(turn: Turn, max_turns: int) -> list[tuple[str, str, bool]]:
    earlier = turn.conversation[:-1][-max_turns:] if max_turns > 0 else []
    return [(line.author[:64], line.content, line.from_bot) for line in earlier]
