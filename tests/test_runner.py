"""The job runner end to end: a temp-file queue, a real tiny torch model behind the arbiter, fake handlers."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from engine.jobs.runner import JobContext, JobFailed, JobRunner
from engine.store.db import Database
from engine.store.jobs import Job, JobStore
from tests.runner_support import A, B, make_runner, run_all, settings, stepper


@pytest.fixture
async def db(tmp_path):
    async with Database(tmp_path / "jobs.db") as database:
        yield database


async def test_jobs_run_through_the_arbiter_off_the_event_loop(db) -> None:
    loop_thread = threading.get_ident()
    threads = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        async with ctx.arbiter.use("tiny") as model:

            def forward() -> list[float]:
                threads.append(threading.get_ident())
                with torch.no_grad():
                    return model.module(torch.tensor([job.payload["x"]])).tolist()[0]

            return {"out": await ctx.to_thread(forward)}

    runner, rec = make_runner(db, {"generate": generate})
    ids = [await runner.jobs.enqueue(A, 1, 2, "generate", {"x": [i, 0.5, -1.0, 2.0]}) for i in range(3)]
    await run_all(runner)
    final = [await runner.jobs.get(i) for i in ids]
    assert [j.state for j in final] == ["done"] * 3
    assert all(len(j.result["out"]) == 4 for j in final)
    assert final[0].result != final[1].result  # real computation on different inputs
    assert threads and loop_thread not in threads
    assert sorted(rec.posted) == ids and sorted(j.id for j in rec.done) == ids


def progress_writes(runner: JobRunner) -> list[dict]:
    """Every progress row the runner writes to the store, in order."""
    writes: list[dict] = []
    record = runner.jobs.progress

    async def counted(job_id: int, data: dict) -> None:
        writes.append(data)
        await record(job_id, data)

    runner.jobs.progress = counted  # type: ignore[method-assign]
    return writes


async def stepped_job(db, steps: int, delay_s: float, interval_s: float) -> tuple[JobRunner, list[int], list[dict]]:
    """Run one job of `steps` steps; (the runner, the steps its subscribers saw, the progress rows written)."""

    async def generate(job: Job, ctx: JobContext) -> dict:
        await ctx.to_thread(stepper, ctx, steps, delay_s)
        return {}

    runner, rec = make_runner(db, {"generate": generate}, progress_interval_s=interval_s)
    writes = progress_writes(runner)
    jid = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await run_all(runner)
    assert (await runner.jobs.get(jid)).state == "done"
    return runner, [s for (j, s, t) in rec.progress if j == jid], writes


async def test_progress_reaches_subscribers_latest_first_and_the_store_is_written_sparingly(db) -> None:
    runner, steps, writes = await stepped_job(db, 20, 0.03, 0.2)
    assert steps[0] == 1 and steps[-1] == 20 and steps == sorted(steps)
    assert len(steps) > len(writes)  # subscribers see what arrives; the store records one step per 200 ms
    assert 2 <= len(writes) < 20 and writes[-1] == {"step": 20, "total": 20}
    assert (await runner.jobs.get(1)).progress == {"step": 20, "total": 20}


async def test_a_job_shorter_than_the_progress_interval_writes_no_progress_row(db) -> None:
    _, steps, writes = await stepped_job(db, 5, 0.0, 30)
    assert steps[-1] == 5 and writes == []  # the subscribers still see every update; the store none


async def test_a_preview_is_never_thrown_away_while_updates_coalesce(db) -> None:
    previews: list[tuple[int, object]] = []

    class Previews:
        async def on_progress(self, job_id: int, step: int, total: int, preview: object) -> None:
            if preview is not None:
                previews.append((step, preview))

    def burst(ctx: JobContext) -> None:  # previews at 5, 10, 15; the last step has none (as a denoiser's)
        for step in range(1, 21):
            ctx.progress(step, 20, f"preview-{step}" if step % 5 == 0 and step < 20 else None)

    async def generate(job: Job, ctx: JobContext) -> dict:
        await ctx.to_thread(burst, ctx)
        return {}

    runner, rec = make_runner(db, {"generate": generate}, progress_interval_s=10)
    runner.subscribe(Previews())
    await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await run_all(runner)
    assert [j.state for j in rec.done] == ["done"]
    assert previews, "the latest preview rides along with a later update"
    assert [p for _, p in previews] == sorted({p for _, p in previews}, key=lambda p: int(p.split("-")[1]))
    assert all(step >= int(str(p).split("-")[1]) for step, p in previews)


async def test_cancel_running_job_is_seen_at_the_next_step(db) -> None:
    ran: list[int] = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        await ctx.to_thread(stepper, ctx, 200, 0.01, ran)
        return {}

    runner, rec = make_runner(db, {"generate": generate}, progress_interval_s=0)
    jid = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await runner.start()
    try:
        await asyncio.wait_for(rec.step_seen.wait(), 10)
        assert await runner.jobs.cancel(jid, A) == "cancelling"  # through the DB only: the poller sees it
        await runner.run_until_idle(10)
    finally:
        await runner.stop()
    job = await runner.jobs.get(jid)
    assert job.state == "cancelled" and job.error.startswith("cancelled after step")
    assert 2 <= len(ran) < 200
    assert rec.posted == [jid]


async def test_cancel_queued_job_never_runs_and_is_announced(db) -> None:
    calls: list[int] = []
    gate = asyncio.Event()

    async def generate(job: Job, ctx: JobContext) -> dict:
        calls.append(job.id)
        await gate.wait()
        return {}

    runner, rec = make_runner(db, {"generate": generate})
    first = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    second = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await runner.start()
    try:
        while not calls:
            await asyncio.sleep(0.01)
        assert await runner.cancel(second, A) == "cancelled"
        gate.set()
        await runner.run_until_idle(10)
    finally:
        await runner.stop()
    assert calls == [first]
    assert (await runner.jobs.get(second)).state == "cancelled"
    assert sorted(rec.posted) == [first, second]


async def test_restart_recovery_finishes_everything_and_posts_each_once(db) -> None:
    s = settings(max_attempts=2)
    old = JobStore(db, s.queue)  # the previous process, which died with leases of 0 s
    crashed = await old.enqueue(B, 1, 2, "generate", {"n": 2})
    assert (await old.claim("dead-worker", lease_s=0.0)).id == crashed
    exhausted = await old.enqueue(A, 1, 2, "generate", {"n": 3})
    assert (await old.claim("dead-worker", lease_s=0.0)).id == exhausted
    await old.fail(exhausted, "RuntimeError: boom", retry=True)
    assert (await old.claim("dead-worker", lease_s=0.0)).attempts == 2  # 2 of 2 attempts used
    finished_unposted = await old.enqueue(B, 1, 2, "generate", {"n": 4})
    assert (await old.claim("dead-worker", lease_s=0.0)).id == finished_unposted
    await old.finish(finished_unposted, {"ok": 4})
    queued = await old.enqueue(A, 1, 2, "generate", {"n": 1})
    states = {j: (await old.get(j)).state for j in (queued, crashed, exhausted, finished_unposted)}
    assert states == {queued: "queued", crashed: "running", exhausted: "running", finished_unposted: "done"}

    async def generate(job: Job, ctx: JobContext) -> dict:
        return {"ok": job.payload["n"]}

    runner, rec = make_runner(db, {"generate": generate}, s)
    await run_all(runner)
    final = {j: await runner.jobs.get(j) for j in (queued, crashed, exhausted, finished_unposted)}
    assert {j: f.state for j, f in final.items()} == {
        queued: "done",
        crashed: "done",
        exhausted: "failed",
        finished_unposted: "done",
    }
    assert final[exhausted].error.startswith("gave up after 2 attempts; the worker stopped")
    assert sorted(rec.posted) == sorted(final)
    for job in list(rec.done):
        await rec.on_done(job)  # a second poster / a duplicate announcement
    assert sorted(rec.posted) == sorted(final)
    assert await runner.jobs.mark_posted(queued) is False


async def test_crashing_handler_is_retried_then_succeeds(db) -> None:
    calls = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return {"ok": True}

    runner, rec = make_runner(db, {"generate": generate})
    jid = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await run_all(runner)
    job = await runner.jobs.get(jid)
    assert (job.state, job.attempts, calls) == ("done", 2, [1, 2])
    assert [j.id for j in rec.done] == [jid]  # announced once, when it was final


async def test_always_crashing_handler_fails_after_max_attempts(db) -> None:
    calls = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        calls.append(job.id)
        raise RuntimeError("boom")

    runner, rec = make_runner(db, {"generate": generate}, settings(max_attempts=3))
    jid = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    await run_all(runner)
    job = await runner.jobs.get(jid)
    assert job.state == "failed" and len(calls) == 3
    assert job.error == "gave up after 3 attempts; last error: RuntimeError: boom"
    assert rec.posted == [jid]


async def test_permanent_errors_and_unknown_kinds_fail_without_retry(db) -> None:
    calls = []

    async def generate(job: Job, ctx: JobContext) -> dict:
        calls.append(job.id)
        raise JobFailed("the prompt is empty")

    async def bad(job: Job, ctx: JobContext) -> dict:
        return ["not", "a", "dict"]  # type: ignore[return-value]

    runner, rec = make_runner(db, {"generate": generate, "bad": bad}, settings(max_attempts=2))
    g = await runner.jobs.enqueue(A, 1, 2, "generate", {})
    u = await runner.jobs.enqueue(A, 1, 2, "upscale", {})
    b = await runner.jobs.enqueue(A, 1, 2, "bad", {})
    await run_all(runner)
    jobs = {j: await runner.jobs.get(j) for j in (g, u, b)}
    assert (jobs[g].state, jobs[g].error, calls) == ("failed", "the prompt is empty", [g])
    assert jobs[u].state == "failed"
    assert jobs[u].error == "no handler for job kind 'upscale' (this worker runs: bad, generate)"
    assert (
        jobs[b].error
        == "gave up after 2 attempts; last error: TypeError: the 'bad' handler returned list, not a dict"
    )
    assert sorted(rec.posted) == [g, u, b]
