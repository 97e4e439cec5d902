"""The seed-aware result cache (request key → generation) and GPU-time rates and estimates per job."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.store.db import Database
from engine.store.history import Generation

RATE_WEIGHT = 0.3  # a new measurement's share of a preset's rate (an exponential average)

# the estimated GPU-seconds of queued and running jobs (then narrowed to a user, or to those before a job)
PENDING = (
    "SELECT coalesce(sum(c.gpu_s), 0) FROM job_costs c JOIN jobs j ON j.id = c.job_id"
    " WHERE j.state IN ('queued', 'running')"
)


class OverBudget(Exception):
    """The user's queued jobs plus this one would pass their cap on queued GPU-seconds."""


@dataclass(frozen=True)
class Estimate:
    """A job's estimated GPU-seconds, recorded with it, and the cap on its user's queued GPU-seconds."""

    gpu_s: float
    max_queued_s: float

    def check(self, conn: sqlite3.Connection, user_id: int) -> None:
        """OverBudget when the user's queued and running jobs plus this one pass max_queued_s."""
        (queued,) = conn.execute(PENDING + " AND c.user_id = ?", (user_id,)).fetchone()
        if queued + self.gpu_s > self.max_queued_s:
            raise OverBudget(
                f"your queued jobs already need about {queued:.0f} GPU-seconds; this one (about {self.gpu_s:.0f})"
                f" would pass your limit of {self.max_queued_s:.0f}: wait for them to finish"
            )


class ResultCache:
    """Request keys of finished generations, each reusable for a TTL; the oldest go beyond max_entries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, key: str, ttl_s: float, now: float | None = None) -> Generation | None:
        """The generation stored under `key` if younger than ttl_s (an expired entry is dropped)."""
        now = time.time() if now is None else now
        row = await self.db.fetchone(
            "SELECT g.*, c.created_at AS cached_at FROM result_cache c JOIN generations g ON g.id = c.generation_id"
            " WHERE c.key = ?",
            (key,),
        )
        if row is None:
            return None
        if now - row["cached_at"] > ttl_s:
            await self.db.execute("DELETE FROM result_cache WHERE key = ?", (key,))
            return None
        data = dict(row)
        data.pop("cached_at")
        return Generation.from_row(data)  # type: ignore[arg-type]

    @staticmethod
    def entry(key: str, max_entries: int) -> Callable[[sqlite3.Connection, int], None]:
        """Remember `key` → a generation (replacing an older entry), then trim to max_entries: a step of the
        transaction that records the generation, (conn, generation_id) -> None (HistoryStore.record_for_job)."""

        def keep(conn: sqlite3.Connection, generation_id: int) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO result_cache (key, generation_id, created_at) VALUES (?, ?, ?)",
                (key, generation_id, time.time()),
            )
            conn.execute(
                "DELETE FROM result_cache WHERE key IN (SELECT key FROM result_cache"
                " ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (max_entries,),
            )

        return keep

    async def drop(self, key: str) -> None:
        """Forget one key (its images are gone)."""
        await self.db.execute("DELETE FROM result_cache WHERE key = ?", (key,))

    async def size(self) -> int:
        """How many entries are stored."""
        row = await self.db.fetchone("SELECT count(*) FROM result_cache")
        return int(row[0]) if row else 0


class Costs:
    """Measured GPU-seconds per work unit (step × megapixel × image) per preset and device; job estimates."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def rate(self, preset: str, device: str) -> tuple[float, int] | None:
        """(rate, samples) measured for the preset on the device, or None before its first job."""
        row = await self.db.fetchone(
            "SELECT rate, samples FROM preset_rates WHERE preset = ? AND device = ?", (preset, device)
        )
        return (float(row["rate"]), int(row["samples"])) if row else None

    async def observe(self, preset: str, device: str, rate: float, weight: float = RATE_WEIGHT) -> float:
        """Fold one measured rate in (first = as is, then an exponential average); the new rate."""
        return await self.db.transaction(self.fold(preset, device, rate, weight))

    @staticmethod
    def fold(
        preset: str, device: str, rate: float, weight: float = RATE_WEIGHT
    ) -> Callable[[sqlite3.Connection], float]:
        """observe() as a step of a caller's transaction: (conn) -> the new rate."""

        def step(conn: sqlite3.Connection) -> float:
            row = conn.execute(
                "SELECT rate, samples FROM preset_rates WHERE preset = ? AND device = ?", (preset, device)
            ).fetchone()
            new = rate if row is None else (1 - weight) * float(row[0]) + weight * rate
            conn.execute(
                "INSERT INTO preset_rates (preset, device, rate, samples, updated_at) VALUES (?, ?, ?, 1, ?)"
                " ON CONFLICT (preset, device) DO UPDATE SET rate = excluded.rate,"
                " samples = preset_rates.samples + 1, updated_at = excluded.updated_at",
                (preset, device, new, time.time()),
            )
            return new

        return step

    async def estimate_of(self, job_id: int) -> float | None:
        """A job's estimated GPU-seconds, or None when it was not estimated."""
        row = await self.db.fetchone("SELECT gpu_s FROM job_costs WHERE job_id = ?", (job_id,))
        return float(row[0]) if row else None

    async def pending(self, user_id: int | None = None, before_job: int | None = None) -> float:
        """Estimated GPU-seconds of queued and running jobs (one user's, or those ahead of a job)."""
        sql = PENDING
        args: list[int] = []
        if user_id is not None:
            sql, args = sql + " AND c.user_id = ?", [*args, user_id]
        if before_job is not None:
            sql, args = sql + " AND j.id < ?", [*args, before_job]
        row = await self.db.fetchone(sql, args)
        return float(row[0]) if row else 0.0

    async def jobs_today(self, user_id: int, now: float | None = None) -> int:
        """Jobs the user submitted in the last 24 hours, as the daily quota counts them."""
        now = time.time() if now is None else now
        row = await self.db.fetchone(
            "SELECT count(*) FROM jobs WHERE user_id = ? AND created_at > ?"
            " AND NOT (state = 'cancelled' AND started_at IS NULL)",
            (user_id, now - 86_400),
        )
        return int(row[0]) if row else 0
