"""The persistent job queue: fair claiming, leases, retries, cancellation and exactly-once posting."""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Callable

from engine.config import Queue
from engine.store.cache import Estimate
from engine.store.db import Database
from engine.store.job_claims import take_fair, take_new
from engine.store.job_rows import (
    COLUMNS,
    DAY_S,
    FINAL,
    Claimed,
    Job,
    JobError,
    JobNotFound,
    JobStateError,
    NotJobOwner,
    QuotaExceeded,
    json_dict,
)

__all__ = [
    "FINAL", "Claimed", "Job", "JobError", "JobNotFound", "JobStateError", "JobStore", "NotJobOwner", "QuotaExceeded",
]  # fmt: skip


class JobStore:
    """SQL operations on `jobs`; every write is one BEGIN IMMEDIATE transaction."""

    def __init__(self, db: Database, queue: Queue | None = None, clock: Callable[[], float] = time.time):
        self.db = db
        self.settings = queue or Queue()
        self.clock = clock

    # -- reads ------------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        """The job, or None if there is no such id."""
        row = await self.db.fetchone(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    async def require(self, job_id: int) -> Job:
        """The job, or JobNotFound."""
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(f"there is no job #{job_id}")
        return job

    async def cancel_requested(self, job_id: int) -> bool:
        """Whether a cancel was asked for (cheap read for the runner's poller)."""
        row = await self.db.fetchone("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(row and row[0])

    async def user_jobs(self, user_id: int, states: tuple[str, ...] = ("queued", "running")) -> list[Job]:
        """A user's jobs in the given states, oldest first."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT {COLUMNS} FROM jobs WHERE user_id = ? AND state IN ({marks}) ORDER BY id"
        return [Job.from_row(r) for r in await self.db.fetchall(sql, (user_id, *states))]

    async def queued(self) -> int:
        """How many jobs are queued (an index range: the finished history is not read)."""
        row = await self.db.fetchone("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
        return int(row[0]) if row else 0

    async def counts(self) -> dict[str, int]:
        """Number of jobs per state (every state present, zero included)."""
        rows = await self.db.fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        out = dict.fromkeys(("queued", "running", *FINAL), 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    async def unposted_finished(self, limit: int = 100) -> list[Job]:
        """Final jobs whose result has not been posted yet, oldest first."""
        sql = f"SELECT {COLUMNS} FROM jobs WHERE posted = 0 AND state IN {FINAL} ORDER BY id LIMIT ?"
        return [Job.from_row(r) for r in await self.db.fetchall(sql, (limit,))]

    async def position(self, job_id: int) -> int | None:
        """1-based place in the fair claim order; None if the job is not queued."""
        queued = await self.db.fetchall("SELECT id, user_id, priority FROM jobs WHERE state = 'queued'")
        if not any(r[0] == job_id for r in queued):
            return None
        sql = "SELECT user_id, MAX(started_at) FROM jobs WHERE started_at IS NOT NULL GROUP BY user_id"
        last = dict(await self.db.fetchall(sql))
        per_user: dict[int, list[tuple[int, int]]] = {}
        for jid, uid, prio in queued:
            per_user.setdefault(uid, []).append((-prio, jid))
        for jobs in per_user.values():
            jobs.sort()
        heap = [(last.get(uid) or -1.0, *jobs[0], uid) for uid, jobs in per_user.items()]
        heapq.heapify(heap)
        turn, pos = max(last.values(), default=0.0) or 0.0, 0
        while heap:
            _, _, jid, uid = heapq.heappop(heap)
            pos += 1
            if jid == job_id:
                return pos
            per_user[uid].pop(0)
            if per_user[uid]:
                turn += 1.0
                heapq.heappush(heap, (turn, *per_user[uid][0], uid))
        return None  # unreachable: job_id was among the queued rows

    # -- writes -----------------------------------------------------------------------------

    async def enqueue(
        self,
        user_id: int,
        guild_id: int,
        channel_id: int,
        kind: str,
        payload: dict,
        priority: int = 0,
        reply_to: dict | None = None,
        estimate: Estimate | None = None,
    ) -> int:
        """Insert a queued job (committed on return) with its estimate; QuotaExceeded past queue.daily_quota
        per 24 h, OverBudget past the estimate's cap on the user's queued GPU-seconds."""
        insert = self._inserter(user_id, guild_id, channel_id, kind, payload, priority, reply_to, estimate)
        return await self.db.transaction(insert)

    async def enqueue_taken(
        self, worker_id: str, lease_s: float, user_id: int, guild_id: int, channel_id: int, kind: str,
        payload: dict, priority: int = 0, reply_to: dict | None = None, estimate: Estimate | None = None,
    ) -> tuple[int, Job | None]:  # fmt: skip
        """enqueue(), and in the same transaction the job claimed for worker_id when a fair claim would take it
        at once (nothing else queued, its user under queue.max_per_user running jobs): (id, the running row or
        None when it stays queued)."""
        insert = self._inserter(user_id, guild_id, channel_id, kind, payload, priority, reply_to, estimate)
        limit, now = self.settings.max_per_user, self.clock()

        def insert_and_take(conn: sqlite3.Connection) -> tuple[int, Job | None]:
            job_id = insert(conn)
            return job_id, take_new(conn, job_id, user_id, worker_id, now, lease_s, limit)

        return await self.db.transaction(insert_and_take)

    def _inserter(
        self, user_id: int, guild_id: int, channel_id: int, kind: str, payload: dict, priority: int,
        reply_to: dict | None, estimate: Estimate | None,
    ) -> Callable[[sqlite3.Connection], int]:  # fmt: skip
        if not kind or not isinstance(kind, str):
            raise ValueError(f"the job kind must be a non-empty string, got {kind!r}")
        body, reply = json_dict(payload, "payload"), json_dict(reply_to or {}, "reply_to")
        now, attempts = self.clock(), self.settings.max_attempts

        def insert(conn: sqlite3.Connection) -> int:
            self._check_quota(conn, user_id, now)
            if estimate is not None:
                estimate.check(conn, user_id)
            cur = conn.execute(
                "INSERT INTO jobs (kind, user_id, guild_id, channel_id, payload, priority, max_attempts,"
                " reply_to, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, user_id, guild_id, channel_id, body, priority, attempts, reply, now),
            )
            job_id = int(cur.lastrowid or 0)
            if estimate is not None:
                conn.execute(
                    "INSERT INTO job_costs (job_id, user_id, gpu_s) VALUES (?, ?, ?)", (job_id, user_id, estimate.gpu_s)
                )
            return job_id

        return insert

    def _check_quota(self, conn: sqlite3.Connection, user_id: int, now: float) -> None:
        quota = self.settings.daily_quota
        used, oldest = conn.execute(
            "SELECT COUNT(*), MIN(created_at) FROM jobs WHERE user_id = ? AND created_at > ?"
            " AND NOT (state = 'cancelled' AND started_at IS NULL)",
            (user_id, now - DAY_S),
        ).fetchone()
        if used >= quota:
            wait_min = max(1, round((oldest + DAY_S - now) / 60))
            raise QuotaExceeded(
                f"you have used your {quota} jobs for the last 24 hours; the next one frees up in ~{wait_min} min"
            )

    async def claim(
        self, worker_id: str, lease_s: float | None = None, kinds: tuple[str, ...] | None = None
    ) -> Job | None:
        """Take the next job fairly (least recently served user first, then priority, then age) or None."""
        taken = (await self.claim_many(1, worker_id, lease_s, kinds)).jobs
        return taken[0] if taken else None

    async def claim_many(
        self, n: int, worker_id: str, lease_s: float | None = None, kinds: tuple[str, ...] | None = None
    ) -> Claimed:
        """Take up to n jobs in one transaction, each the one claim() would take next; fewer when the queue ran dry."""
        lease = lease_s if lease_s is not None else self.settings.lease_s
        now, limit = self.clock(), self.settings.max_per_user
        return await self.db.transaction(lambda conn: take_fair(conn, n, worker_id, now, lease, limit, kinds))

    async def heartbeat(self, job_id: int, worker_id: str, lease_s: float | None = None) -> bool:
        """Extend the lease; False if this worker no longer owns the running job."""
        lease = lease_s if lease_s is not None else self.settings.lease_s
        return await self._update(
            "UPDATE jobs SET lease_expires = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (self.clock() + lease, job_id, worker_id),
        )

    async def progress(self, job_id: int, data: dict) -> None:
        """Record the latest progress (a small JSON dict) of a running job."""
        await self._update("UPDATE jobs SET progress = ? WHERE id = ?", (json_dict(data, "progress"), job_id))

    async def finish(self, job_id: int, result: dict, worker_id: str | None = None) -> Job | None:
        """Mark a running job done; its final row, or None if it is not running (or not owned by worker_id)."""
        return await self._end(job_id, worker_id, "done", result=json_dict(result, "result"))

    async def mark_cancelled(self, job_id: int, worker_id: str | None = None, reason: str = "") -> bool:
        """End a running job as cancelled (the handler saw should_cancel)."""
        return await self._end(job_id, worker_id, "cancelled", error=reason or "cancelled on request") is not None

    async def fail(self, job_id: int, error: str, retry: bool, worker_id: str | None = None) -> str:
        """Requeue a running job if retry and attempts remain, else fail it; returns the new state."""
        job = await self.require(job_id)
        if job.state != "running":
            raise JobStateError(f"job #{job_id} is {job.state}, not running")
        if retry and job.attempts < job.max_attempts and not job.cancel_requested:
            ok = await self._update(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL, error = ?"
                " WHERE id = ? AND state = 'running' AND (? IS NULL OR lease_owner = ?)",
                (error, job_id, worker_id, worker_id),
            )
            return "queued" if ok else (await self.require(job_id)).state
        if retry and not job.cancel_requested:
            error = f"gave up after {job.attempts} attempts; last error: {error}"
        state = "cancelled" if job.cancel_requested else "failed"
        await self._end(job_id, worker_id, state, error=error)
        return (await self.require(job_id)).state

    async def running_ids(self, owner: str) -> list[int]:
        """Ids of the running jobs whose lease `owner` holds."""
        rows = await self.db.fetchall("SELECT id FROM jobs WHERE state = 'running' AND lease_owner = ?", (owner,))
        return [r[0] for r in rows]

    async def release(self, job_id: int, worker_id: str) -> bool:
        """Give a running job back to the queue without counting the attempt (graceful shutdown)."""
        return await self._update(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL,"
            " attempts = MAX(0, attempts - 1) WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (job_id, worker_id),
        )

    async def cancel(self, job_id: int, user_id: int | None) -> str:
        """Cancel a queued job at once ('cancelled') or flag a running one ('cancelling'); None user = admin."""
        async with self.db.write() as conn:
            cur = await conn.execute("SELECT user_id, state FROM jobs WHERE id = ?", (job_id,))
            row = await cur.fetchone()
            if row is None:
                raise JobNotFound(f"there is no job #{job_id}")
            if user_id is not None and row[0] != user_id:
                raise NotJobOwner(f"job #{job_id} belongs to someone else")
            if row[1] in FINAL:
                raise JobStateError(f"job #{job_id} is already {row[1]}")
            if row[1] == "queued":
                await conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
                    " error = 'cancelled before it started' WHERE id = ?",
                    (self.clock(), job_id),
                )
                return "cancelled"
            await conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return "cancelling"

    async def recover(self, now: float | None = None) -> dict[str, int]:
        """Requeue running jobs whose lease expired (or fail/cancel them); returns counts per outcome."""
        now = self.clock() if now is None else now
        expired = "state = 'running' AND (lease_expires IS NULL OR lease_expires < ?)"
        clear = "lease_owner = NULL, lease_expires = NULL"
        async with self.db.write() as conn:
            cancelled = await conn.execute(
                f"UPDATE jobs SET state = 'cancelled', {clear}, finished_at = ?,"
                f" error = 'cancelled on request' WHERE {expired} AND cancel_requested = 1",
                (now, now),
            )
            failed = await conn.execute(
                f"UPDATE jobs SET state = 'failed', {clear}, finished_at = ?, error = 'gave up after '"
                f" || attempts || ' attempts; the worker stopped while running it' ||"
                f" COALESCE('; last error: ' || error, '') WHERE {expired} AND attempts >= max_attempts",
                (now, now),
            )
            requeued = await conn.execute(
                f"UPDATE jobs SET state = 'queued', {clear} WHERE {expired}", (now,)
            )
            return {"requeued": requeued.rowcount, "failed": failed.rowcount, "cancelled": cancelled.rowcount}

    async def mark_posted(self, job_id: int) -> bool:
        """Atomically claim the right to post a final job's result; True for exactly one caller."""
        return await self._update(
            f"UPDATE jobs SET posted = 1 WHERE id = ? AND posted = 0 AND state IN {FINAL}", (job_id,)
        )

    def finish_in(self, conn: sqlite3.Connection, job_id: int, result: dict, worker_id: str | None) -> Job | None:
        """finish() as a step of another transaction on the store's writer (e.g. the history row's): the job is
        done exactly when that transaction commits."""
        return self._ender(job_id, worker_id, "done", result=json_dict(result, "result"))(conn)

    async def _end(self, job_id: int, worker_id: str | None, state: str, **cols: str) -> Job | None:
        return await self.db.transaction(self._ender(job_id, worker_id, state, **cols))

    def _ender(
        self, job_id: int, worker_id: str | None, state: str, **cols: str
    ) -> Callable[[sqlite3.Connection], Job | None]:
        sets = "".join(f", {k} = ?" for k in cols)
        sql = (
            f"UPDATE jobs SET state = ?, lease_owner = NULL, lease_expires = NULL, finished_at = ?{sets}"
            f" WHERE id = ? AND state = 'running' AND (? IS NULL OR lease_owner = ?) RETURNING {COLUMNS}"
        )
        params = (state, self.clock(), *cols.values(), job_id, worker_id, worker_id)

        def end(conn: sqlite3.Connection) -> Job | None:
            rows = conn.execute(sql, params).fetchall()  # fetchall: an unfinished RETURNING would block COMMIT
            return Job.from_row(rows[0]) if rows else None

        return end

    async def _update(self, sql: str, params: tuple) -> bool:
        return await self.db.execute(sql, params) > 0
