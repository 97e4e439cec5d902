"""A job row and the job queue's errors (engine.store.jobs keeps the queue's operations)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

DAY_S = 24 * 3600.0
FINAL = ("done", "failed", "cancelled")
COLUMNS = (
    "id, kind, user_id, guild_id, channel_id, payload, priority, state, attempts, max_attempts, "
    "lease_owner, lease_expires, cancel_requested, progress, result, error, reply_to, posted, "
    "created_at, started_at, finished_at"
)


class JobError(Exception):
    """Base class for job-queue errors; messages are meant for the user."""


class QuotaExceeded(JobError):
    """The user has used up queue.daily_quota jobs in the last 24 hours."""


class JobNotFound(JobError, LookupError):
    """No job with that id."""


class NotJobOwner(JobError, PermissionError):
    """Someone tried to cancel another user's job."""


class JobStateError(JobError):
    """The job is in a state that does not allow the operation."""


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, JSON columns decoded."""

    id: int
    kind: str
    user_id: int
    guild_id: int
    channel_id: int
    payload: dict
    priority: int
    state: str
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires: float | None
    cancel_requested: bool
    progress: dict
    result: dict | None
    error: str | None
    reply_to: dict
    posted: bool
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def final(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.state in FINAL

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        for key in ("payload", "progress", "reply_to"):
            d[key] = json.loads(d[key] or "{}")
        d["result"] = json.loads(d["result"]) if d["result"] is not None else None
        d["cancel_requested"] = bool(d["cancel_requested"])
        d["posted"] = bool(d["posted"])
        return cls(**d)


@dataclass(frozen=True)
class Claimed:
    """The jobs one claim took, and whether jobs stayed queued (claimable now, or once a user's running job ends)."""

    jobs: list[Job]
    more: bool


def json_dict(value: Any, what: str) -> str:
    """A job's dict column as compact JSON; TypeError naming the column for anything else."""
    if not isinstance(value, dict):
        raise TypeError(f"the job {what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(f"the job {what} must be JSON-serializable: {e}") from None
