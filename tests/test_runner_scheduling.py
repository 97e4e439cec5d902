"""The job runner's scheduling: fair order, side-by-side slots, a graceful stop, one-shot runs, and claims that
start queued work as slots free without waiting for the poll."""

from __future__ import annotations

import asyncio

import pytest

from engine.jobs.runner import JobContext
from engine.store.db import Database
from engine.store.jobs import Job, JobStore
from tests.runner_support import A, B, make_runner, run_all, run_until_done, settings, stepper


@pytest.fixture
async def db(tmp_path):
    async with Database(tmp_path / "jobs.db") as database:
        yield database

async def test_fair_order_through_the_runner(db) -> None:
    order = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        order.append(job.user_id)
        return {}

    runner, _ = make_runner(db, {"generate": generate})
    for _ in range(6):
        await runner.jobs.enqueue(A, 1, 2, "generate", {})
    for _ in range(2):
        await runner.jobs.enqueue(B, 1, 2, "generate", {})
    await run_all(runner)
    assert order == [A, B, A, B, A, A, A, A]


async def test_concurrency_runs_jobs_side_by_side(db) -> None:
    inside = 0
    peak = 0

    async def generate(job: Job, ctx: JobContext) -> dict:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.1)
        inside -= 1
        return {}

    for concurrency, expected_peak in ((1, 1), (2, 2)):
        runner, _ = make_runner(db, {"generate": generate}, concurrency=concurrency)
        for user in (A, B, A, B):
            await runner.jobs.enqueue(user, 1, 2, "generate", {})
        peak = 0
        await run_all(runner)
        assert peak == expected_peak


async def test_stop_hands_a_running_job_back_without_using_an_attempt(db) -> None:
    async def slow(job: Job, ctx: JobContext) -> dict:
        await ctx.to_thread(stepper, ctx, 500, 0.01)
        return {"finished": True}

    runner, rec = make_runner(db, {"generate": slow}, progress_interval_s=0)
    jid = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await runner.start()
    await asyncio.wait_for(rec.step_seen.wait(), 10)
    await runner.stop()
    job = await runner.jobs.get(jid)
    assert (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)
    assert rec.done == []

    async def quick(job: Job, ctx: JobContext) -> dict:
        return {"finished": True}

    runner2, rec2 = make_runner(db, {"generate": quick})
    await run_all(runner2)
    assert (await runner2.jobs.get(jid)).state == "done" and rec2.posted == [jid]


async def test_run_one_runs_a_single_job_in_place(db) -> None:
    async def generate(job: Job, ctx: JobContext) -> dict:
        return {"echo": job.payload["x"]}

    runner, rec = make_runner(db, {"generate": generate})
    assert await runner.run_one() is None
    jid = await runner.jobs.enqueue(A, 1, 2, "generate", {"x": 7})
    job = await runner.run_one()
    assert (job.id, job.state, job.result) == (jid, "done", {"echo": 7})
    assert rec.posted == [jid]


async def test_queued_jobs_and_a_retry_start_as_slots_free_without_waiting_for_the_poll(db) -> None:
    calls: list[int] = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        calls.append(job.id)
        if len(calls) == 1:
            raise RuntimeError("a flaky first attempt")
        return {"ok": True}

    runner, rec = make_runner(db, {"generate": generate})  # one slot
    runner.poll_s = 120.0  # only a freed slot or a requeued retry can start the rest in time
    ids = [await runner.jobs.enqueue(A, 1, 2, "generate", {}) for _ in range(3)]
    await run_until_done(runner, rec, 3)
    assert sorted(j.id for j in rec.done) == ids and all(j.state == "done" for j in rec.done)
    assert calls.count(ids[0]) == 2  # retried once


async def test_a_job_held_back_by_its_users_limit_starts_when_that_users_job_ends(db) -> None:
    async def generate(job: Job, ctx: JobContext) -> dict:
        await asyncio.sleep(0.05)
        return {}

    # two slots, one running job per user: the claim takes A's first and leaves the second queued
    runner, rec = make_runner(db, {"generate": generate}, settings(max_per_user=1), concurrency=2)
    runner.poll_s = 120.0  # only the claim's "more queued" can start the second in time
    ids = [await runner.jobs.enqueue(A, 1, 2, "generate", {}) for _ in range(2)]
    await run_until_done(runner, rec, 2)
    assert [j.id for j in rec.done] == ids


async def test_a_submission_while_every_slot_is_busy_starts_when_one_frees(db) -> None:
    release = asyncio.Event()

    async def generate(job: Job, ctx: JobContext) -> dict:
        if job.payload.get("first"):
            await release.wait()
        return {}

    runner, rec = make_runner(db, {"generate": generate})  # one slot
    runner.poll_s = 120.0
    first = await runner.jobs.enqueue(A, 1, 2, "generate", {"first": True})
    await runner.start()  # its first claim takes it
    try:
        async with asyncio.timeout(30):
            while first not in runner.active:
                await asyncio.sleep(0.01)
            assert not runner.may_have_queued  # the claim left nothing queued
            second = await runner.jobs.enqueue(B, 1, 2, "generate", {})
            runner.wake()  # the loop wakes with no free slot
            await asyncio.sleep(0.05)
            release.set()
            while len(rec.done) < 2:
                await asyncio.sleep(0.01)
    finally:
        await runner.stop()
    assert [j.id for j in rec.done] == [first, second]


async def test_an_idle_runners_polls_take_no_write_lock_and_still_find_work_from_elsewhere(db) -> None:
    ran: list[int] = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        ran.append(job.id)
        return {}

    runner, rec = make_runner(db, {"generate": generate})
    claims = 0
    claim_many = runner.jobs.claim_many

    async def counted(*args, **kw):
        nonlocal claims
        claims += 1
        return await claim_many(*args, **kw)

    runner.jobs.claim_many = counted  # type: ignore[method-assign]
    await runner.start()
    try:
        await asyncio.sleep(0.05)  # the claim at start (jobs may be left from before)
        at_start = claims
        await asyncio.sleep(0.2)  # about ten polls of an empty queue
        idle_claims = claims - at_start
        job_id = await JobStore(db, settings().queue).enqueue(A, 1, 2, "generate", {})  # another process: no wake
        async with asyncio.timeout(5):
            while not rec.done:
                await asyncio.sleep(0.01)
    finally:
        await runner.stop()
    assert idle_claims == 0 and ran == [job_id]
