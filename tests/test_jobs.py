"""The persistent job queue on a temp-file SQLite database."""

from __future__ import annotations

import asyncio

import pytest

from engine.config import Queue
from engine.store.db import Database
from engine.store.jobs import Claimed, JobNotFound, JobStateError, JobStore, NotJobOwner, QuotaExceeded

A, B, C = 111, 222, 333


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def db(tmp_path):
    async with Database(tmp_path / "jobs.db") as database:
        yield database


def store(db: Database, clock: Clock | None = None, **queue) -> JobStore:
    settings = {"max_per_user": 10, "daily_quota": 100, "max_attempts": 3, "lease_s": 30.0} | queue
    return JobStore(db, Queue(**settings), clock=clock or Clock())


async def add(js: JobStore, user: int, n: int = 1, priority: int = 0, kind: str = "generate") -> list[int]:
    return [await js.enqueue(user, 5, 6, kind, {"n": i}, priority, {"message_id": i}) for i in range(n)]


async def test_enqueue_claim_finish_roundtrip(db, tmp_path) -> None:
    js = store(db)
    jid = await js.enqueue(A, 5, 6, "generate", {"prompt": "a fox"}, reply_to={"message_id": 9})
    # committed before enqueue returns: a separate connection sees it
    async with Database(tmp_path / "jobs.db") as other:
        assert (await JobStore(other).get(jid)).state == "queued"
    job = await js.claim("w1")
    assert (job.id, job.state, job.attempts, job.lease_owner) == (jid, "running", 1, "w1")
    assert job.payload == {"prompt": "a fox"} and job.reply_to == {"message_id": 9}
    assert job.lease_expires == pytest.approx(js.clock() + 30.0)
    assert await js.claim("w1") is None
    done = await js.finish(jid, {"images": ["x.png"]}, "w1")
    assert done is not None and done.state == "done" and done.result == {"images": ["x.png"]}
    done = await js.get(jid)
    assert (done.state, done.result, done.final, done.posted) == ("done", {"images": ["x.png"]}, True, False)
    assert await js.finish(jid, {"again": 1}) is None  # not running any more
    assert [j.id for j in await js.unposted_finished()] == [jid]


async def test_bad_payload_is_rejected_clearly(db) -> None:
    js = store(db)
    with pytest.raises(TypeError, match="payload must be JSON-serializable"):
        await js.enqueue(A, 0, 0, "generate", {"x": object()})
    with pytest.raises(TypeError, match="payload must be a dict"):
        await js.enqueue(A, 0, 0, "generate", ["x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        await js.enqueue(A, 0, 0, "", {})
    assert (await js.counts())["queued"] == 0


async def test_fairness_alternates_between_users(db) -> None:
    clock = Clock()
    js = store(db, clock)
    a_jobs = await add(js, A, 6)
    b_jobs = await add(js, B, 2)
    order = []
    while (job := await js.claim("w")) is not None:
        order.append(job.user_id)
        await js.finish(job.id, {})
    assert order == [A, B, A, B, A, A, A, A]
    assert len(a_jobs) == 6 and len(b_jobs) == 2


async def test_fairness_returning_user_goes_first_and_positions_match(db) -> None:
    js = store(db)
    await add(js, A, 3)
    first = await js.claim("w")
    await js.finish(first.id, {})
    late_b = await add(js, B, 2)
    late_c = await add(js, C, 1)
    queued = [j.id for j in await js.user_jobs(A, ("queued",))] + late_b + late_c
    positions = {jid: await js.position(jid) for jid in queued}
    order = []
    while (job := await js.claim("w")) is not None:
        order.append(job.id)
        await js.finish(job.id, {})
    assert [j for j in order] == sorted(queued, key=lambda j: positions[j])
    assert order[:2] == [late_b[0], late_c[0]]  # B and C have never been served; A just was
    assert await js.position(order[0]) is None  # no longer queued


async def test_priority_within_a_user(db) -> None:
    js = store(db)
    low = await add(js, A, 1, priority=0)
    high = await add(js, A, 1, priority=5)
    assert (await js.claim("w")).id == high[0]
    assert (await js.claim("w")).id == low[0]


async def test_per_user_running_limit(db) -> None:
    js = store(db, max_per_user=2)
    await add(js, A, 4)
    await add(js, B, 1)
    claimed = [await js.claim("w") for _ in range(4)]
    assert [j.user_id if j else None for j in claimed] == [A, B, A, None]
    await js.finish(claimed[0].id, {})
    assert (await js.claim("w")).user_id == A


async def test_claim_can_filter_kinds(db) -> None:
    js = store(db)
    await add(js, A, 1, kind="upscale")
    assert await js.claim("w", kinds=("generate",)) is None
    assert (await js.claim("w", kinds=("generate", "upscale"))).kind == "upscale"


async def test_daily_quota_is_rolling(db) -> None:
    clock = Clock()
    js = store(db, clock, daily_quota=3)
    await add(js, A, 2)
    clock.t += 3600
    await add(js, A, 1)
    with pytest.raises(QuotaExceeded, match=r"used your 3 jobs for the last 24 hours; .* ~1380 min"):
        await add(js, A, 1)
    await add(js, B, 1)  # other users are unaffected
    clock.t += 23 * 3600 + 1  # the first two fall out of the window
    await add(js, A, 2)
    with pytest.raises(QuotaExceeded):
        await add(js, A, 1)


async def test_cancelled_before_start_does_not_count_against_quota(db) -> None:
    js = store(db, daily_quota=2)
    jid = (await add(js, A, 1))[0]
    assert await js.cancel(jid, A) == "cancelled"
    await add(js, A, 2)
    with pytest.raises(QuotaExceeded):
        await add(js, A, 1)


async def test_cancel_queued_and_running(db) -> None:
    js = store(db)
    queued, running = await add(js, A, 2)
    assert (await js.claim("w")).id == queued  # the first one runs; cancel the second while queued
    queued, running = running, queued
    with pytest.raises(NotJobOwner, match="belongs to someone else"):
        await js.cancel(queued, B)
    assert await js.cancel(queued, A) == "cancelled"
    assert (await js.get(queued)).state == "cancelled"
    assert await js.cancel(running, A) == "cancelling"
    assert await js.cancel_requested(running) is True
    assert (await js.get(running)).state == "running"
    assert await js.mark_cancelled(running, "w") is True
    assert (await js.get(running)).state == "cancelled"
    with pytest.raises(JobStateError, match="already cancelled"):
        await js.cancel(running, None)
    with pytest.raises(JobNotFound, match="no job #999"):
        await js.cancel(999, A)


async def test_fail_retries_then_gives_up_with_message(db) -> None:
    js = store(db, max_attempts=2)
    jid = (await add(js, A, 1))[0]
    await js.claim("w")
    assert await js.fail(jid, "RuntimeError: CUDA hiccup", retry=True, worker_id="w") == "queued"
    job = await js.get(jid)
    assert (job.state, job.attempts, job.lease_owner) == ("queued", 1, None)
    await js.claim("w")
    assert await js.fail(jid, "RuntimeError: CUDA hiccup", retry=True) == "failed"
    job = await js.get(jid)
    assert job.error == "gave up after 2 attempts; last error: RuntimeError: CUDA hiccup"
    assert job.final and job.attempts == 2
    with pytest.raises(JobStateError, match="not running"):
        await js.fail(jid, "again", retry=True)


async def test_fail_without_retry_is_final(db) -> None:
    js = store(db)
    jid = (await add(js, A, 1))[0]
    await js.claim("w")
    assert await js.fail(jid, "the prompt is empty", retry=False) == "failed"
    assert (await js.get(jid)).error == "the prompt is empty"


async def test_heartbeat_extends_only_the_owners_lease(db) -> None:
    clock = Clock()
    js = store(db, clock)
    jid = (await add(js, A, 1))[0]
    await js.claim("w1")
    clock.t += 20
    assert await js.heartbeat(jid, "w1") is True
    assert (await js.get(jid)).lease_expires == clock.t + 30
    assert await js.heartbeat(jid, "w2") is False
    assert await js.finish(jid, {}, worker_id="w2") is None  # a stale worker cannot finish it


async def test_recover_requeues_fails_and_cancels_expired_leases(db) -> None:
    clock = Clock()
    js = store(db, clock, max_attempts=2)
    fresh, expired, exhausted, cancelling = await add(js, A, 4)
    for _ in range(4):
        await js.claim("dead")
    await js.fail(exhausted, "boom", retry=True)
    await js.claim("dead")  # exhausted: attempts now 2 of 2
    await js.cancel(cancelling, A)
    await js.heartbeat(fresh, "dead", lease_s=1000)
    assert await js.recover(clock.t + 31) == {"requeued": 1, "failed": 1, "cancelled": 1}
    states = {jid: (await js.get(jid)).state for jid in (fresh, expired, exhausted, cancelling)}
    assert states == {fresh: "running", expired: "queued", exhausted: "failed", cancelling: "cancelled"}
    error = (await js.get(exhausted)).error
    assert error == "gave up after 2 attempts; the worker stopped while running it; last error: boom"


async def test_mark_posted_is_exactly_once_even_when_racing(db) -> None:
    js = store(db)
    jid = (await add(js, A, 1))[0]
    assert await js.mark_posted(jid) is False  # not final yet
    await js.claim("w")
    await js.finish(jid, {})
    results = await asyncio.gather(*(js.mark_posted(jid) for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert await js.unposted_finished() == []


async def test_release_gives_the_attempt_back(db) -> None:
    js = store(db)
    jid = (await add(js, A, 1))[0]
    await js.claim("w")
    assert await js.release(jid, "w") is True
    job = await js.get(jid)
    assert (job.state, job.attempts) == ("queued", 0)


async def test_progress_and_counts(db) -> None:
    js = store(db)
    jid = (await add(js, A, 1))[0]
    await add(js, B, 1)
    await js.claim("w")
    await js.progress(jid, {"step": 3, "total": 8})
    assert (await js.get(jid)).progress == {"step": 3, "total": 8}
    assert await js.counts() == {"queued": 1, "running": 1, "done": 0, "failed": 0, "cancelled": 0}


async def test_claim_many_takes_the_jobs_claim_would_take_in_one_go(db) -> None:
    js = store(db, max_per_user=2)
    await add(js, A, 3)
    await add(js, B, 1)
    claimed = await js.claim_many(5, "w")
    taken = claimed.jobs
    assert [j.user_id for j in taken] == [A, B, A]  # fair order; A's third waits for the per-user limit
    assert all(j.state == "running" and j.lease_owner == "w" for j in taken)
    assert len({j.started_at for j in taken}) == 3  # the fairness clock still moves per claim
    assert claimed.more  # A's third stays queued
    assert await js.claim_many(2, "w") == Claimed([], more=True)  # A still runs two
    await js.finish(taken[0].id, {}, "w")
    last = await js.claim_many(2, "w")
    assert [j.user_id for j in last.jobs] == [A] and not last.more  # the queue is empty now


async def test_enqueue_claim_and_finish_do_not_read_the_users_whole_history(db) -> None:
    """A user with thousands of past jobs: the quota, the fair claim and the close still read a handful of rows."""
    clock = Clock()
    js = store(db, clock, daily_quota=1000)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    await db.writer.set_progress_handler(count, 50)  # counts SQLite VM steps, 50 at a time

    async def one_job() -> int:
        steps[0] = 0
        job = await js.claim("w") if await js.enqueue(A, 5, 6, "generate", {}) else None
        await js.finish(job.id, {})
        return steps[0]

    before = await one_job()
    old = clock.t - 3 * 86_400  # done jobs from before the quota's day

    def history(conn) -> None:
        conn.executemany(
            "INSERT INTO jobs (kind, user_id, guild_id, channel_id, payload, priority, max_attempts, reply_to,"
            " created_at, state, started_at, finished_at, attempts) VALUES"
            " ('generate', ?, 5, 6, '{}', 0, 3, '{}', ?, 'done', ?, ?, 1)",
            [(A, old + i, old + i, old + i + 1) for i in range(5000)],
        )

    await db.transaction(history)
    assert await one_job() <= 2 * before + 4


async def test_the_daily_quota_counts_from_an_index_alone(db) -> None:
    """The quota's count of a user's last 24 hours reads one index, not a table row per job of the day."""
    js = store(db)
    sql: list[str] = []
    await db.transaction(lambda conn: conn.set_trace_callback(sql.append))
    await js.enqueue(A, 5, 6, "generate", {})
    await db.transaction(lambda conn: conn.set_trace_callback(None))
    count = next(s for s in sql if s.startswith("SELECT COUNT(*)") and "FROM jobs" in s)
    plan = " ".join(row[3] for row in await db.fetchall("EXPLAIN QUERY PLAN " + count))
    assert "USING COVERING INDEX" in plan and "SCAN" not in plan, plan
