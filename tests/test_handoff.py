"""A submission's job taken by the local runner in the transaction that queues it, and run with what the
submission read; a generation's history row and its done state committed together."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine import core
from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Scoring
from engine.jobs.policy import Requester
from engine.jobs.runner import JobContext
from engine.jobs.submit import JobSubmitter
from engine.store import Store
from engine.store.db import Database
from engine.store.jobs import Job, JobStore, QuotaExceeded
from tests.runner_support import A, B, make_runner, settings

TINY = {"family": "sd15", "steps": 2, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}


@pytest.fixture
async def db(tmp_path):
    async with Database(tmp_path / "jobs.db") as database:
        yield database


async def test_a_new_job_is_taken_as_it_is_queued_only_when_a_fair_claim_would_take_it(db) -> None:
    jobs = JobStore(db, Queue(max_per_user=1, daily_quota=2))
    first, taken = await jobs.enqueue_taken("w1", 30.0, A, 1, 2, "generate", {"n": 1})
    assert taken is not None and taken.id == first and taken.state == "running"
    assert taken.lease_owner == "w1" and taken.attempts == 1 and taken.started_at is not None
    # A already runs max_per_user (1) jobs: the next one of A waits in the queue
    second, taken = await jobs.enqueue_taken("w1", 30.0, A, 1, 2, "generate", {"n": 2})
    assert taken is None and (await jobs.require(second)).state == "queued"
    # another user's job, while A's waits: the fair order decides, so it is queued behind it too
    third, taken = await jobs.enqueue_taken("w1", 30.0, B, 1, 2, "generate", {"n": 3})
    assert taken is None and (await jobs.require(third)).state == "queued"
    claimed = await jobs.claim_many(2, "w1", 30.0)
    assert [j.id for j in claimed.jobs] == [third]  # B was never served; A is at its limit
    with pytest.raises(QuotaExceeded):  # the daily quota holds on this path as well: nothing is inserted
        await jobs.enqueue_taken("w1", 30.0, A, 1, 2, "generate", {"n": 4})
    assert (await jobs.counts())["queued"] == 1


async def _submitter(db: Database, runner, tmp_path: Path) -> JobSubmitter:
    store = await Store.open(tmp_path / "store.db")
    return JobSubmitter(runner.jobs, store, runner.settings, runner.wake, taker=runner)


async def test_an_idle_runner_runs_a_submitted_job_without_claiming_it_with_the_submissions_reads(
    db, tmp_path
) -> None:
    seen: list[JobContext] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def generate(job: Job, ctx: JobContext) -> dict:
        seen.append(ctx)
        started.set()
        await release.wait()
        return {"ok": job.payload["prompt"]}

    runner, rec = make_runner(db, {"generate": generate}, settings(max_per_user=4))
    runner.concurrency = 1
    submitter = await _submitter(db, runner, tmp_path)
    claims: list[int] = []
    claim_many = runner.jobs.claim_many

    async def counted(n: int, *args: object, **kw: object):
        out = await claim_many(n, *args, **kw)
        claims.extend(j.id for j in out.jobs)
        return out

    runner.jobs.claim_many = counted  # type: ignore[method-assign]
    await runner.start()
    try:
        who = Requester(A, 1, 2)
        first = await submitter.submit(who, "generate", {"prompt": "one"})
        assert first in runner.active  # started from the submission, before any poll
        await asyncio.wait_for(started.wait(), 5)
        second = await submitter.submit(who, "generate", {"prompt": "two"})  # the only slot is busy: queued
        assert (await runner.jobs.require(second)).state == "queued"
        release.set()
        async with asyncio.timeout(10):
            while len(rec.done) < 2:
                await asyncio.sleep(0.01)
    finally:
        await runner.stop()
        await submitter.store.close()
    assert claims == [second]  # the first was never claimed: it was taken as it was queued
    assert [j.result for j in sorted(rec.done, key=lambda j: j.id)] == [{"ok": "one"}, {"ok": "two"}]
    assert seen[0].reads is not None and seen[0].reads.stored.user == {}
    assert seen[1].reads is None  # a claimed job reads for itself


async def test_a_runner_that_is_stopped_takes_nothing_and_one_stopping_hands_a_taken_job_back(db, tmp_path) -> None:
    async def generate(job: Job, ctx: JobContext) -> dict:
        return {}

    runner, _rec = make_runner(db, {"generate": generate})
    submitter = await _submitter(db, runner, tmp_path)
    try:
        first = await submitter.submit(Requester(A, 1, 2), "generate", {"prompt": "one"})  # not started: nothing is taken
        assert (await runner.jobs.require(first)).state == "queued" and not runner.active
        await runner.start()
        await runner.run_until_idle(10)
        assert runner.reserve("generate") and not runner.reserve("no-such-kind")
        runner._stopping = True  # a stop began while the submission's transaction ran
        job_id, taken = await runner.jobs.enqueue_taken(runner.worker_id, 30.0, A, 1, 2, "generate", {})
        assert taken is not None
        runner.adopt(taken)
        await runner.stop()
        back = await runner.jobs.require(job_id)
        assert back.state == "queued" and back.attempts == 0  # handed back, the attempt not counted
    finally:
        await submitter.store.close()


def _engine_settings(tmp_path: Path, tiny_models_dir: Path) -> Settings:
    return Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60),
        queue=Queue(batch_window_ms=0, daily_quota=50),
        scoring=Scoring(enabled=False),
    )


async def test_a_generation_reads_its_settings_and_preset_once_and_ends_in_its_rows_transaction(
    tmp_path, tiny_models_dir, tiny_engines
) -> None:
    svc = await tiny_engines(_engine_settings(tmp_path, tiny_models_dir), TINY)
    reads: list[str] = []
    resolve, pair = svc.store.presets.resolve, svc.store.settings.pair

    async def counted_resolve(kind, name, *who):
        reads.append(f"preset {name}")
        return await resolve(kind, name, *who)

    async def counted_pair(*who):
        reads.append("settings")
        return await pair(*who)

    finishes: list[int] = []
    finish = svc.jobs.finish

    async def counted_finish(job_id: int, *args: object):
        finishes.append(job_id)
        return await finish(job_id, *args)

    svc.store.presets.resolve, svc.store.settings.pair = counted_resolve, counted_pair
    svc.jobs.finish = counted_finish
    job_id = await svc.submit("generate", {"prompt": "a boat", "preset": "tiny", "seed": 3}, user_id=A)
    job = await svc.wait(job_id, 120)
    assert job.state == "done" and Path(job.result["images"][0]).exists()
    assert reads == ["settings", "preset tiny"]  # the handler used what the submission read
    assert finishes == []  # done in the history row's transaction: the runner wrote nothing more
    row = await svc.store.history.of_job(job_id)
    assert row is not None and job.result["generation_id"] == row.id


async def test_a_failed_end_of_job_rolls_its_history_row_back_and_the_retry_records_one_row(
    tmp_path, tiny_models_dir, tiny_engines, monkeypatch
) -> None:
    svc = await tiny_engines(_engine_settings(tmp_path, tiny_models_dir), TINY)
    fail_once = [True]
    finish_in = JobStore.finish_in

    def flaky(self: JobStore, conn: sqlite3.Connection, *args: object) -> Job | None:
        if fail_once.pop() if fail_once else False:
            raise sqlite3.OperationalError("disk I/O error")
        return finish_in(self, conn, *args)

    monkeypatch.setattr(JobStore, "finish_in", flaky)
    job = await svc.wait(await svc.submit("generate", {"prompt": "a boat", "preset": "tiny"}, user_id=A), 120)
    assert job.state == "done" and job.attempts == 2  # the first attempt's end failed: it was retried
    rows = await svc.store.db.fetchall("SELECT generation_id FROM generation_jobs WHERE job_id = ?", (job.id,))
    assert len(rows) == 1 and rows[0][0] == job.result["generation_id"]
    (count,) = await svc.store.db.fetchone("SELECT COUNT(*) FROM generations")
    assert count == 1  # the first attempt's row was rolled back with its failed end


async def test_waiting_on_a_job_this_runner_holds_reads_nothing_until_it_ends(
    tmp_path, tiny_models_dir, tiny_engines, monkeypatch
) -> None:
    monkeypatch.setattr(core, "RECHECK_S", 600.0)  # no periodic re-read: the first job also loads the model
    svc = await tiny_engines(_engine_settings(tmp_path, tiny_models_dir), TINY)
    gets: list[int] = []
    get = svc.jobs.get

    async def counted(job_id: int):
        gets.append(job_id)
        return await get(job_id)

    svc.jobs.get = counted
    job_id = await svc.submit("generate", {"prompt": "a boat", "preset": "tiny"}, user_id=A)
    assert (await svc.wait(job_id, 120)).state == "done"
    assert gets == []  # on_done brought the final row
    assert (await svc.wait(job_id, 5)).state == "done" and gets == [job_id]  # an ended job: read once
