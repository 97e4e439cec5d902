"""The job runner: claims jobs fairly, runs kind-specific handlers, reports progress and final states."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from engine.config import Settings
from engine.jobs.progress import LatestProgress
from engine.jobs.reads import Reads
from engine.runtime.diffusion.errors import Cancelled  # one Cancelled for the engine and every handler
from engine.store.jobs import Job, JobError, JobStore

__all__ = ["Cancelled", "Handler", "JobContext", "JobFailed", "JobRunner", "Subscriber"]
log = logging.getLogger(__name__)
T = TypeVar("T")


class JobFailed(Exception):
    """Raised by a handler for a failure that retrying cannot fix; the message is shown to the user."""


class Subscriber(Protocol):
    """Anything with on_progress and/or on_done (plain or async); missing methods are skipped."""

    def on_progress(self, job_id: int, step: int, total: int, preview: Any) -> Any: ...

    def on_done(self, job: Job) -> Any: ...


class JobContext:
    """What a handler gets besides the job: progress, cancellation and the arbiter."""

    def __init__(self, job: Job, runner: JobRunner, loop: asyncio.AbstractEventLoop, reads: Reads | None = None):
        self.job = job
        self.reads = reads  # what the submission read, when this runner took the job as it was queued
        self.finished: Job | None = None  # the done row, when the handler committed it with its own writes
        self.arbiter = runner.arbiter
        self._runner = runner
        self._loop = loop
        self._cancel = threading.Event()
        self.cancel_reason: str | None = None
        self._lock = threading.Lock()
        self._mailbox = LatestProgress(loop, self._deliver)
        self._pending: set[asyncio.Future] = set()
        if job.cancel_requested:
            self.request_cancel("user")

    def should_cancel(self) -> bool:
        """True once a cancel was requested (cached flag, safe from any thread, never blocks)."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise Cancelled at a step boundary if a cancel was requested."""
        if self._cancel.is_set():
            raise Cancelled(f"job #{self.job.id} was cancelled ({self.cancel_reason})")

    def request_cancel(self, reason: str) -> None:
        """Flag the job; the first reason wins ("user", "shutdown", "lease lost")."""
        with self._lock:
            if self.cancel_reason is None:
                self.cancel_reason = reason
        self._cancel.set()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report progress from any thread (coalesced, latest first: engine.jobs.progress)."""
        self._mailbox.put(step, total, preview)

    def _deliver(self, step: int, total: int, preview: Any) -> None:
        fut = asyncio.ensure_future(self._runner._emit_progress(self.job.id, step, total, preview))
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def finish_in(self, conn: sqlite3.Connection, result: dict) -> Job | None:
        """Mark the job done with `result` as a step of the handler's own transaction on the job store's writer;
        the handler sets `finished` to the returned row once that transaction commits (the runner then writes
        nothing more)."""
        return self._runner.jobs.finish_in(conn, self.job.id, result, self._runner.worker_id)

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking (GPU/CPU-heavy) work off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def flush(self) -> None:
        """Wait until every progress update already reported has reached the subscribers."""
        await asyncio.sleep(0)  # let call_soon_threadsafe callbacks run
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


Handler = Callable[[Job, JobContext], Awaitable[dict]]


async def _call(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        out = fn(*args)
        if inspect.isawaitable(out):
            await out
    except Exception:
        log.exception("job subscriber %r failed", fn)


class JobRunner:
    """Runs queued jobs with `handlers[job.kind]`, `concurrency` at a time, until stop()."""

    def __init__(
        self,
        jobs: JobStore,
        arbiter: Any,
        handlers: dict[str, Handler],
        settings: Settings | None = None,
        worker_id: str | None = None,
        *,
        concurrency: int = 1,
        poll_s: float = 0.5,
        cancel_poll_s: float = 0.25,
        progress_interval_s: float = 0.5,
        permanent_errors: tuple[type[BaseException], ...] = (JobFailed, ValueError),
        shutdown_grace_s: float = 10.0,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        for kind, handler in handlers.items():
            if not callable(handler):
                raise TypeError(f"the handler for {kind!r} is not callable")
        self.jobs = jobs
        self.arbiter = arbiter
        self.handlers = dict(handlers)
        self.settings = settings or Settings()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_s = self.settings.queue.lease_s
        self.concurrency = concurrency
        self.poll_s, self.cancel_poll_s, self.progress_interval_s = poll_s, cancel_poll_s, progress_interval_s
        self.permanent_errors = permanent_errors
        self.shutdown_grace_s = shutdown_grace_s
        self.active: dict[int, JobContext] = {}
        self._tasks: set[asyncio.Task] = set()
        self._subscribers: list[Any] = []
        self._recorded: dict[int, tuple[float, float | None]] = {}  # job id -> (its start, its last progress write)
        self._wake = asyncio.Event()
        self._maybe_queued = True  # jobs stayed queued after the last claim (or none was tried yet)
        self._reserved = 0  # slots held for submissions that may hand their job over (reserve/adopt)
        self._main: asyncio.Task | None = None
        self._stopping = False

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, subscriber: Any) -> Callable[[], None]:
        """Deliver on_progress/on_done to `subscriber`; returns an unsubscribe function."""
        if not (hasattr(subscriber, "on_progress") or hasattr(subscriber, "on_done")):
            raise TypeError("a subscriber needs an on_progress or on_done method")
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    async def _emit_progress(self, job_id: int, step: int, total: int, preview: Any) -> None:
        # the store records at most one step per progress_interval_s, counted from the job's start (a job
        # shorter than that writes none), and the last step of a job that wrote one before
        now = time.monotonic()
        started, written = self._recorded.get(job_id, (now, None))
        since = now - (started if written is None else written)
        if since >= self.progress_interval_s or (step >= total and written is not None):
            self._recorded[job_id] = (started, now)
            try:
                await self.jobs.progress(job_id, {"step": step, "total": total})
            except Exception:
                log.exception("could not record progress of job %s", job_id)
        for sub in list(self._subscribers):
            await _call(getattr(sub, "on_progress", None), job_id, step, total, preview)

    async def _emit_done(self, job: Job) -> None:
        for sub in list(self._subscribers):
            await _call(getattr(sub, "on_done", None), job)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> dict[str, int]:
        """Recover expired leases, re-announce unposted final jobs, then start the claim loop."""
        recovered = await self.jobs.recover()
        await self.announce_unposted()
        self._stopping = False
        self._main = asyncio.get_running_loop().create_task(self._loop())
        return recovered

    def wake(self) -> None:
        """Claim now instead of at the next poll (call after enqueue)."""
        self._wake.set()

    @property
    def may_have_queued(self) -> bool:
        """False only when this runner knows no job is queued: its last claim left none and no submission or
        retry came since (a job enqueued by another process shows at the next poll)."""
        return self._maybe_queued or self._wake.is_set()

    def request_cancel(self, job_id: int) -> bool:
        """In-process fast path after JobStore.cancel(): flag a running job now; False if not ours."""
        ctx = self.active.get(job_id)
        if ctx is not None:
            ctx.request_cancel("user")
        return ctx is not None

    async def cancel(self, job_id: int, user_id: int | None) -> str:
        """Cancel through the store, flag it here at once, and announce a job cancelled while queued."""
        outcome = await self.jobs.cancel(job_id, user_id)
        if outcome == "cancelled":
            await self._emit_done(await self.jobs.require(job_id))
        else:
            self.request_cancel(job_id)
        return outcome

    async def announce_unposted(self) -> int:
        """Send on_done again for final jobs nobody has posted (posters dedupe with mark_posted)."""
        jobs = await self.jobs.unposted_finished(limit=10_000)
        for job in jobs:
            if job.id not in self.active:
                await self._emit_done(job)
        return len(jobs)

    async def stop(self) -> None:
        """Ask running jobs to stop, give them shutdown_grace_s, then hand leftovers back to the queue."""
        self._stopping = True
        self.wake()
        if self._main is not None:
            await self._main
            self._main = None
        for ctx in self.active.values():
            ctx.request_cancel("shutdown")
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=self.shutdown_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def run_until_idle(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing is queued or running (for tests and one-shot CLI runs)."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = await self.jobs.counts()
            if not self._tasks and counts["queued"] == 0 and counts["running"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still pending after {timeout_s} s: {counts}")
            self.wake()
            await asyncio.sleep(0.02)

    async def _loop(self) -> None:
        next_recover = time.monotonic() + self.lease_s
        while not self._stopping:
            if time.monotonic() > next_recover:
                next_recover = time.monotonic() + self.lease_s
                await self._guard(self.jobs.recover())
                await self._guard(self.announce_unposted())
            if self._wake.is_set():  # a submission came since the last claim: it may wait for a free slot
                self._maybe_queued = True
            self._wake.clear()  # a submission from here on wakes the next round
            free = self._free
            # a poll that knows of no queued job reads before it claims: no write lock while idle
            if free > 0 and (self._maybe_queued or await self._guard(self.jobs.queued())):
                claimed = await self._guard(self.jobs.claim_many(free, self.worker_id, self.lease_s))
                # jobs left queued (by the slots or a user's limit): claim again as a slot frees
                self._maybe_queued = claimed is None or claimed.more
                for job in claimed.jobs if claimed else ():
                    self._start(self._run(self._context(job)))
            with contextlib.suppress(TimeoutError):  # until a submission, a freed slot or the next poll
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    @property
    def _free(self) -> int:
        """Slots neither running a job nor held for a submission."""
        return self.concurrency - len(self._tasks) - self._reserved

    def _start(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    # -- hand-off from a submission in this process (engine.jobs.submit) ---------------------

    def reserve(self, kind: str) -> bool:
        """Hold a free slot for a job of `kind` a submission is about to queue; False when this runner is not
        running, has no handler for it or no free slot (the job is then queued and claimed as usual)."""
        if self._main is None or self._stopping or kind not in self.handlers or self._free <= 0:
            return False
        self._reserved += 1
        return True

    def adopt(self, job: Job | None, reads: Reads | None = None) -> None:
        """Run a job the held slot's submission took for this worker as it queued it (None: nothing was taken,
        the slot is free again). A runner stopping meanwhile hands the job back to the queue."""
        self._reserved -= 1
        if job is None:
            self.wake()
        elif self._stopping:
            self._start(self.jobs.release(job.id, self.worker_id))
        else:
            self._start(self._run(self._context(job, reads)))

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._maybe_queued:  # else the queue was empty at the last claim: a submission wakes the loop
            self.wake()
        if not task.cancelled() and task.exception() is not None:
            log.error("job task crashed", exc_info=task.exception())

    async def _guard(self, coro: Awaitable[T]) -> T | None:
        try:
            return await coro
        except Exception:
            log.exception("job store call failed; retrying at the next poll")
            return None

    # -- one job ----------------------------------------------------------------------------

    async def run_one(self) -> Job | None:
        """Claim and run a single job to its end here (no loop); returns its final row or None."""
        job = await self.jobs.claim(self.worker_id, self.lease_s)
        return None if job is None else await self._run(self._context(job))

    def _context(self, job: Job, reads: Reads | None = None) -> JobContext:
        """The job's context, registered as active from its claim: a waiter sees it ends with on_done."""
        ctx = self.active[job.id] = JobContext(job, self, asyncio.get_running_loop(), reads)
        return ctx

    async def _run(self, ctx: JobContext) -> Job:
        job = ctx.job
        self._recorded[job.id] = (time.monotonic(), None)
        watcher = asyncio.get_running_loop().create_task(self._watch(ctx))
        final: Job | None = None
        try:
            final = await self._execute(job, ctx)
        except JobError as e:  # e.g. the lease moved on while we ran: the row is no longer ours
            log.warning("job %s could not be closed by this worker: %s", job.id, e)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await ctx.flush()
            self.active.pop(job.id, None)
            self._recorded.pop(job.id, None)
        final = final or await self.jobs.require(job.id)  # a finished job's row came back with its update
        if final.final:
            await self._emit_done(final)
        return final

    async def _execute(self, job: Job, ctx: JobContext) -> Job | None:
        """Run the handler and record how it ended; the final row when it finished (else None)."""
        handler = self.handlers.get(job.kind)
        wid = self.worker_id
        try:
            if handler is None:
                known = ", ".join(sorted(self.handlers)) or "none"
                raise JobFailed(f"no handler for job kind {job.kind!r} (this worker runs: {known})")
            ctx.raise_if_cancelled()
            result = await handler(job, ctx)
            if not isinstance(result, dict):
                raise TypeError(f"the {job.kind!r} handler returned {type(result).__name__}, not a dict")
            final = ctx.finished or await self.jobs.finish(job.id, result, wid)
            if final is None:
                log.warning("job %s finished after its lease was lost; its result was not recorded", job.id)
            return final
        except Cancelled as e:
            if ctx.cancel_reason == "shutdown":
                await self.jobs.release(job.id, wid)
            else:
                await self.jobs.mark_cancelled(job.id, wid, str(e) or "cancelled on request")
        except asyncio.CancelledError:
            await asyncio.shield(self.jobs.release(job.id, wid))
            raise
        except self.permanent_errors as e:
            await self.jobs.fail(job.id, str(e) or type(e).__name__, retry=False, worker_id=wid)
        except Exception as e:
            log.warning("job %s (%s) crashed: %s", job.id, job.kind, e, exc_info=True)
            if await self.jobs.fail(job.id, f"{type(e).__name__}: {e}", retry=True, worker_id=wid) == "queued":
                self._maybe_queued = True  # its retry is claimable at once

    async def _watch(self, ctx: JobContext) -> None:
        """Poll cancel_requested and keep the lease alive while the handler runs."""
        beat_every = self.lease_s / 3
        next_beat = time.monotonic() + beat_every
        while True:
            await asyncio.sleep(self.cancel_poll_s)
            if await self._guard(self.jobs.cancel_requested(ctx.job.id)):
                ctx.request_cancel("user")
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                owned = await self._guard(self.jobs.heartbeat(ctx.job.id, self.worker_id, self.lease_s))
                if owned is False:
                    ctx.request_cancel("lease lost")
