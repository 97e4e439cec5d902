"""Taking jobs off the queue inside a job store transaction: the fair order, one claimed row, and the hand-off of
a job just submitted to a worker with a free slot."""

from __future__ import annotations

import sqlite3

from engine.store.job_rows import COLUMNS, Claimed, Job


def kinds_sql(kinds: tuple[str, ...] | None, alias: str = "") -> str:
    """An `AND kind IN (...)` filter, or nothing for every kind."""
    return f"AND {alias}kind IN ({','.join('?' * len(kinds))})" if kinds else ""


def claim_sql(kinds: tuple[str, ...] | None) -> str:
    """The next job a fair claim takes: least recently served user first, then priority, then age."""
    kind_filter = kinds_sql(kinds, "j.")
    return f"""
        WITH waiting AS (SELECT DISTINCT user_id FROM jobs WHERE state = 'queued'),
        running AS (SELECT user_id, COUNT(*) AS n FROM jobs WHERE state = 'running' GROUP BY user_id),
        last AS (  -- one index probe per waiting user (jobs_user_started)
            SELECT w.user_id, (SELECT MAX(x.started_at) FROM jobs x WHERE x.user_id = w.user_id) AS t FROM waiting w
        )
        SELECT j.id FROM jobs j
        LEFT JOIN running r ON r.user_id = j.user_id
        LEFT JOIN last l ON l.user_id = j.user_id
        WHERE j.state = 'queued' AND COALESCE(r.n, 0) < ? {kind_filter}
        ORDER BY COALESCE(l.t, -1) ASC, j.priority DESC, j.id ASC
        LIMIT 1
    """


def take(conn: sqlite3.Connection, job_id: int, worker_id: str, now: float, lease_s: float) -> Job:
    """Mark one queued job running under worker_id's lease; its row."""
    # started_at doubles as the fairness clock, so it must strictly increase across claims
    (taken,) = conn.execute(  # fetchall: a RETURNING statement left unfinished would block COMMIT
        "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires = ?,"
        " attempts = attempts + 1, started_at = MAX(?, COALESCE((SELECT MAX(started_at)"
        f" FROM jobs), 0) + 0.0001) WHERE id = ? RETURNING {COLUMNS}",
        (worker_id, now + lease_s, now, job_id),
    ).fetchall()
    return Job.from_row(taken)


def take_fair(
    conn: sqlite3.Connection, n: int, worker_id: str, now: float, lease_s: float, max_per_user: int,
    kinds: tuple[str, ...] | None,
) -> Claimed:  # fmt: skip
    """Up to n jobs in the fair order, and whether jobs stayed queued."""
    out: list[Job] = []
    params = (max_per_user, *(kinds or ()))
    while len(out) < n and (row := conn.execute(claim_sql(kinds), params).fetchone()) is not None:
        out.append(take(conn, row[0], worker_id, now, lease_s))
    waiting = f"SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' {kinds_sql(kinds)})"
    return Claimed(out, bool(conn.execute(waiting, kinds or ()).fetchone()[0]))


def take_new(
    conn: sqlite3.Connection, job_id: int, user_id: int, worker_id: str, now: float, lease_s: float,
    max_per_user: int,
) -> Job | None:  # fmt: skip
    """The job just inserted, taken for worker_id when a fair claim would take it now (no other job is queued
    and its user runs fewer than max_per_user jobs); None leaves it queued."""
    free = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND id != ?)"
        " AND (SELECT COUNT(*) FROM jobs WHERE state = 'running' AND user_id = ?) < ?",
        (job_id, user_id, max_per_user),
    ).fetchone()[0]
    return take(conn, job_id, worker_id, now, lease_s) if free else None
