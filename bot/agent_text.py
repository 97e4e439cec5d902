"""What the agent says after its tools ran: built from the results (never invented), in prompts/agent texts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tools.orchestrator import ToolCall
from tools.prompts import AgentPrompts

SHOWN_RESULTS = 5
ARG_CHARS = 60


def _ids(job_ids: Sequence[int]) -> str:
    return ", ".join(f"#{j}" for j in job_ids)


def _details(call: ToolCall) -> str:
    a = call.args
    parts = []
    if (a.get("count") or 1) > 1:
        parts.append(f"{a['count']} images")
    for key in ("aspect", "style", "preset"):
        if a.get(key):
            parts.append(f"{key} {a[key]}")
    if a.get("negative"):
        parts.append(f"without {a['negative']}")
    mode = call.result.get("mode")
    if mode and mode != "txt2img":
        parts.append(str(mode))
    if call.result.get("based_on"):
        parts.append(f"from #{call.result['based_on']}")
    parts.append(f"seed {call.result.get('seed')}")
    return " (" + ", ".join(parts) + ")"


def call_text(p: AgentPrompts, call: ToolCall) -> str:
    """What one finished call means for the user."""
    r = call.result
    if not call.ok:
        return p.message("failed", tool=call.name, error=call.error or "it was not run")
    if call.name == "generate":
        return p.message("generated", prompt=r.get("prompt", ""), details=_details(call), ids=_ids(r["job_ids"]))
    if call.name == "search_history":
        items = r.get("results") or []
        query = str(call.args.get("query") or "")
        if not items:
            return p.message("found_none", query=query) if query else p.message("found_recent")
        head = p.message("found", n=len(items), query=query) if query else p.message("found_recent")
        lines = [p.message("found_item", id=g["id"], prompt=g["prompt"], seed=g["seed"]) for g in items[:SHOWN_RESULTS]]
        return "\n".join([head, *lines])
    if call.name == "enhance_prompt":
        text = p.message("enhanced", family=r.get("family", ""), prompt=r.get("prompt", ""))
        changes = [str(c) for c in r.get("changes") or []]
        return text + ("\n- " + "\n- ".join(changes) if changes else "")
    if call.name == "apply_style":
        text = p.message("styled", style=r.get("style", ""), prompt=r.get("prompt", ""))
        return text + ("\n" + p.message("styled_negative", negative=r["negative"]) if r.get("negative") else "")
    if call.name == "critique":
        fixes = r.get("fixes") or {}
        lines = [str(r.get("critique", ""))]
        for key, label in (("prompt_add", "add"), ("prompt_remove", "remove"), ("negative_add", "avoid")):
            if fixes.get(key):
                lines.append(f"{label}: {', '.join(fixes[key])}")
        return "\n".join(lines)
    return json.dumps(r, ensure_ascii=False, default=str)[:500]


def compose(p: AgentPrompts, calls: Sequence[ToolCall], notes: Sequence[str]) -> str:
    """The reply for a turn whose tools ran: each call's outcome, then the notes (clamps, drops, fallbacks)."""
    shown = [c for c in calls if c.executed or c.error]
    parts = [call_text(p, c) for c in shown]
    all_notes = [*notes, *(n for c in shown for n in c.result.get("notes", []) if isinstance(n, str))]
    if all_notes:
        parts.append(p.message("notes", notes="; ".join(dict.fromkeys(all_notes))))
    return "\n".join(x for x in parts if x)


def short_args(args: Mapping[str, Any]) -> str:
    """Arguments that were set, compactly: prompt="a cat", count=2."""
    out = []
    for key, value in args.items():
        if value in (None, "", [], {}) or value is False or (key == "count" and value == 1) or (key == "limit" and value == 5):
            continue
        text = json.dumps(value, ensure_ascii=False, default=str)
        out.append(f"{key}={text if len(text) <= ARG_CHARS else text[: ARG_CHARS - 1] + '…'}")
    return ", ".join(out)


def outcome(call: ToolCall) -> str:
    """One line: what a call did or why it failed."""
    if not call.executed:
        return f"not run: {call.error}"
    if call.error:
        return f"failed: {call.error}"
    r = call.result
    if call.name == "generate":
        return f"queued job {_ids(r.get('job_ids', []))}"
    if call.name == "search_history":
        return f"{r.get('count', 0)} result(s)"
    if call.name == "critique":
        return "critique given" + ("" if r.get("matches_prompt", True) else " (does not match the prompt)")
    return "done"


def stopped_text(p: AgentPrompts, headline: str, calls: Sequence[ToolCall]) -> str:
    """A limit ended the turn: say so, list each call tried in one line, and offer to continue."""
    lines = [headline]
    if calls:
        lines.append(p.message("tried"))
        lines += [f"- {c.name}({short_args(c.args)}): {outcome(c)}" for c in calls]
    lines.append(p.message("continue_hint"))
    return "\n".join(lines)


def explain_text(p: AgentPrompts, turn: Any) -> str:
    """Why the agent did what it did in a stored turn (engine.store.turns.TurnRecord)."""
    if turn is None:
        return p.message("explain_none")
    trace = turn.trace or {}
    lines = [p.message("explain_request", request=turn.request[:300])]
    by = "my rules" if turn.decided_by == "rules" else "my language model"
    lines.append(p.message("explain_route", route=turn.route or "?", by=by, why=trace.get("why", "")))
    read_from = trace.get("read_from") or {}
    if read_from:
        items = "; ".join(f'{k} from "{v}"' for k, v in read_from.items())
        lines.append(p.message("explain_read", items=items))
    for c in trace.get("calls", []):
        lines.append(p.message("explain_call", tool=c["tool"], args=c.get("args", ""), outcome=c.get("outcome", "")))
    if turn.stopped:
        lines.append(p.message("explain_stop", stopped=turn.stopped))
    return "\n".join(lines)
