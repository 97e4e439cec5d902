"""Shared by the job runner's tests: a recording subscriber, a runner on a temp-file queue with a tiny model."""

from __future__ import annotations

import asyncio
import time

from engine.config import Queue, Settings
from engine.jobs.runner import Cancelled, JobContext, JobRunner
from engine.runtime.arbiter import MIB, Arbiter
from engine.store.db import Database
from engine.store.jobs import Job, JobStore
from tests.test_arbiter import TinyModel

A, B = 111, 222


class Recorder:
    """A subscriber that also plays the poster: posts each final job at most once via mark_posted."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.done: list[Job] = []
        self.posted: list[int] = []
        self.progress: list[tuple[int, int, int]] = []
        self.step_seen = asyncio.Event()

    async def on_progress(self, job_id: int, step: int, total: int, preview: object) -> None:
        self.progress.append((job_id, step, total))
        if step >= 2:
            self.step_seen.set()

    async def on_done(self, job: Job) -> None:
        self.done.append(job)
        if await self.jobs.mark_posted(job.id):
            self.posted.append(job.id)


def settings(**queue) -> Settings:
    q = {"max_per_user": 4, "daily_quota": 100, "max_attempts": 3, "lease_s": 30.0} | queue
    return Settings(queue=Queue(**q))


def make_runner(db: Database, handlers: dict, s: Settings | None = None, **kw) -> tuple[JobRunner, Recorder]:
    s = s or settings()
    jobs = JobStore(db, s.queue)
    arbiter = Arbiter(budget_bytes=8 * MIB, device="cpu", probe=lambda: 0)
    arbiter.register(TinyModel("tiny", 1, kind="diffusion", width=4))
    runner = JobRunner(jobs, arbiter, handlers, s, "w-test", poll_s=0.02, cancel_poll_s=0.02, **kw)
    rec = Recorder(jobs)
    runner.subscribe(rec)
    return runner, rec


async def run_all(runner: JobRunner, timeout_s: float = 20) -> None:
    await runner.start()
    try:
        await runner.run_until_idle(timeout_s)
    finally:
        await runner.stop()


async def run_until_done(runner: JobRunner, rec: Recorder, n: int, timeout_s: float = 30) -> None:
    """Start the runner, wait until `rec` saw n final jobs (no wake() calls, unlike run_until_idle), stop it."""
    await runner.start()
    try:
        async with asyncio.timeout(timeout_s):
            while len(rec.done) < n:
                await asyncio.sleep(0.01)
    finally:
        await runner.stop()


def stepper(ctx: JobContext, total: int, delay_s: float, ran: list[int] | None = None) -> None:
    """A fake denoising loop in a worker thread: checks cancel at every step boundary."""
    for step in range(1, total + 1):
        if ctx.should_cancel():
            raise Cancelled(f"cancelled after step {step - 1}")
        time.sleep(delay_s)
        if ran is not None:
            ran.append(step)
        ctx.progress(step, total, None)
