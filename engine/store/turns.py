"""Agent turns: the request, the route and who chose it, every tool call (arguments, result summary, timings)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from engine.store.db import Database

MAX_TRACE_CHARS = 20_000


@dataclass(frozen=True)
class TurnRecord:
    """One agent turn as stored; `trace` holds the decisions and tool calls in order."""

    user_id: int
    request: str
    id: int | None = None
    guild_id: int = 0
    channel_id: int = 0
    route: str = ""
    decided_by: str = ""
    trace: dict[str, Any] = field(default_factory=dict)
    reply: str = ""
    stopped: str | None = None
    ms: float = 0.0
    prompt_tokens: int = 0
    job_ids: tuple[int, ...] = ()
    created_at: float = 0.0


def _row(row: Any, job_ids: tuple[int, ...]) -> TurnRecord:
    return TurnRecord(
        id=row["id"], user_id=row["user_id"], guild_id=row["guild_id"], channel_id=row["channel_id"],
        request=row["request"], route=row["route"], decided_by=row["decided_by"], trace=json.loads(row["trace"]),
        reply=row["reply"], stopped=row["stopped"], ms=row["ms"], prompt_tokens=row["prompt_tokens"],
        job_ids=job_ids, created_at=row["created_at"],
    )  # fmt: skip


class TurnStore:
    """Writes and reads agent turns; a user only ever reads their own."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, turn: TurnRecord) -> int:
        """Store a turn and link its jobs; returns the turn id."""
        trace = json.dumps(turn.trace, ensure_ascii=False, default=str)
        if len(trace) > MAX_TRACE_CHARS:
            trace = json.dumps({"cut": True, "text": trace[:MAX_TRACE_CHARS]})
        async with self.db.write() as conn:
            cur = await conn.execute(
                "INSERT INTO agent_turns (user_id, guild_id, channel_id, request, route, decided_by, trace, reply,"
                " stopped, ms, prompt_tokens, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (turn.user_id, turn.guild_id, turn.channel_id, turn.request[:2000], turn.route, turn.decided_by,
                 trace, turn.reply[:4000], turn.stopped, turn.ms, turn.prompt_tokens, turn.created_at or time.time()),
            )  # fmt: skip
            turn_id = int(cur.lastrowid)
            for job_id in turn.job_ids:
                await conn.execute(
                    "INSERT OR IGNORE INTO agent_turn_jobs (job_id, turn_id) VALUES (?, ?)", (job_id, turn_id)
                )
        return turn_id

    async def _jobs(self, turn_id: int) -> tuple[int, ...]:
        rows = await self.db.fetchall(
            "SELECT job_id FROM agent_turn_jobs WHERE turn_id = ? ORDER BY job_id", (turn_id,)
        )
        return tuple(int(r["job_id"]) for r in rows)

    async def get(self, turn_id: int, user_id: int) -> TurnRecord | None:
        """One of the user's turns."""
        row = await self.db.fetchone(
            "SELECT * FROM agent_turns WHERE id = ? AND user_id = ?", (turn_id, user_id)
        )
        return _row(row, await self._jobs(row["id"])) if row else None

    async def latest(
        self, user_id: int, channel_id: int | None = None, *, before: int | None = None
    ) -> TurnRecord | None:
        """The user's newest turn (in a channel when given; older than turn `before` when given)."""
        sql, args = "SELECT * FROM agent_turns WHERE user_id = ?", [user_id]
        if channel_id is not None:
            sql, args = sql + " AND channel_id = ?", [*args, channel_id]
        if before is not None:
            sql, args = sql + " AND id < ?", [*args, before]
        row = await self.db.fetchone(sql + " ORDER BY id DESC LIMIT 1", args)
        return _row(row, await self._jobs(row["id"])) if row else None

    async def for_job(self, job_id: int, user_id: int) -> TurnRecord | None:
        """The user's turn that queued a job, or None (the job came from a command, or is someone else's)."""
        row = await self.db.fetchone(
            "SELECT t.* FROM agent_turn_jobs j JOIN agent_turns t ON t.id = j.turn_id"
            " WHERE j.job_id = ? AND t.user_id = ?",
            (job_id, user_id),
        )
        return _row(row, await self._jobs(row["id"])) if row else None

    async def for_generation(self, generation_id: int, user_id: int) -> TurnRecord | None:
        """The user's turn whose job made a generation."""
        row = await self.db.fetchone(
            "SELECT job_id FROM generation_jobs WHERE generation_id = ?", (generation_id,)
        )
        return await self.for_job(int(row["job_id"]), user_id) if row else None
