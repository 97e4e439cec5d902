"""What the agent remembers of its turns: the stored trace, "continue" after a stopped turn, and "why?"."""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.agent_result import AgentResult
from bot.conversation import Turn
from engine.store.turns import TurnRecord
from tools.orchestrator import ToolCall

log = logging.getLogger(__name__)
CONTINUE = re.compile(r"^\s*(?:continue|go on|keep going|carry on|proceed)\b[\s.!]*(?:please|pls)?[\s.!]*$", re.I)
CALL_KEYS = ("args", "outcome", "ms", "key", "full", "result", "executed")


async def continued(store: Any, user_id: int, channel_id: int, text: str) -> tuple[str, dict[str, ToolCall]]:
    """("continue" after a stopped turn) the earlier request and the calls it already made; else `text`."""
    turns = getattr(store, "turns", None)
    if turns is None or not CONTINUE.match(text):
        return text, {}
    last = await turns.latest(user_id, channel_id)
    if last is None or not last.stopped:
        return text, {}
    done = {
        str(c["key"]): ToolCall(c["tool"], dict(c.get("full") or {}), dict(c.get("result") or {}), True)
        for c in last.trace.get("calls", [])
        if c.get("key") and c.get("executed")
    }
    return last.request, done


async def explained_turn(store: Any, user_id: int, channel_id: int, replied_generation_id: int | None) -> Any:
    """The turn "why did you do that?" is about: the one behind the replied image, else the user's last here."""
    if replied_generation_id is not None:
        found = await store.turns.for_generation(replied_generation_id, user_id)
        if found is not None:
            return found
    return await store.turns.latest(user_id, channel_id)


def trace_of(result: AgentResult) -> dict[str, Any]:
    """The stored trace: why, what the words gave, the model steps and every call (arguments and results)."""
    calls = [s for s in result.steps if "call" in s]
    return {
        "why": result.why,
        "read_from": result.read_from,
        "notes": result.notes,
        "steps": [s for s in result.steps if "call" not in s],
        "calls": [{"tool": s["call"], **{k: s.get(k) for k in CALL_KEYS}} for s in calls],
    }


async def record(store: Any, turn: Turn, result: AgentResult, ms: float) -> None:
    """Store the turn (result.turn_id is set); a failure is logged and never costs the user their answer."""
    turns = getattr(store, "turns", None)
    if turns is None:
        return
    row = TurnRecord(
        user_id=turn.user_id, guild_id=turn.guild_id, channel_id=turn.channel_id, request=turn.text,
        route=result.route, decided_by=result.decided_by, trace=trace_of(result), reply=result.reply,
        stopped=result.stopped, ms=round(ms, 1), prompt_tokens=result.prompt_tokens, job_ids=tuple(result.job_ids),
    )  # fmt: skip
    try:
        result.turn_id = await turns.add(row)
    except Exception:
        log.exception("could not store the agent turn")
