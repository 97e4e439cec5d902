"""The bot side of the redis backend: hands a job's GPU work to workers through arq and waits for it.

State flow: the bot's SQLite jobs table stays the truth. The bot's JobRunner claims a job fairly and runs
its handler; the handler's model call becomes one arq job (id "atelier-job:<id>") that a worker runs. The
worker publishes progress (with previews) on a pub/sub channel and puts its result (PNG bytes) in arq's
result key; the bot applies it to its store (history row, finish, post). A restarted bot finds the arq job
by its id and re-attaches instead of running it twice. Workers that die are reaped (registry.py) so another
worker takes their jobs; after queue.max_attempts tries arq gives up and the job is dead-lettered. A job
whose preset a free worker already holds goes to that worker's own queue (routing.py), else to the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from arq.worker import JobExecutionFailed

from engine.config import Settings
from engine.remote.protocol import (
    ARQ_IN_PROGRESS,
    DEAD,
    DONE,
    PROGRESS,
    QUEUE,
    RemoteCrash,
    RemoteJobFailed,
    arq_id,
    from_b64_png,
    raise_error,
    redis_settings,
)
from engine.remote.registry import WorkerRegistry
from engine.remote.routing import depth, locate, preset_of, route
from engine.runtime.diffusion.errors import Cancelled
from engine.store.jobs import JobStore

log = logging.getLogger("atelier.queue")
STATUS_POLL_S = 1.0  # fallback poll in case a pub/sub "done" message was missed
LOST_CHECKS = 2  # consecutive "not found" polls before a job is submitted again
REDIS_RETRY_S = 1.0


@dataclass
class _Waiter:
    ctx: Any
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RemoteQueue:
    """arq pool + pub/sub listener + reaper for one bot process; `call()` runs one op on some worker."""

    def __init__(self, settings: Settings, *, reap_every_s: float | None = None) -> None:
        self.settings = settings
        self.url = settings.queue.redis_url
        self.ttl_s = settings.queue.worker_ttl_s
        self.reap_every_s = reap_every_s or max(0.2, self.ttl_s / 3)
        self.pool: Any = None
        self.registry: WorkerRegistry | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._tasks: list[asyncio.Task] = []
        self._pubsub: Any = None
        self.dead_lettered = 0
        self.on_workers: Any = None  # called with the live worker list after each reap (capacity hints)

    async def start(self) -> None:
        """Connect (clear error if Redis is unreachable) and start the listener and the reaper."""
        from arq import create_pool
        from redis.exceptions import RedisError

        try:
            self.pool = await create_pool(redis_settings(self.url), default_queue_name=QUEUE)
        except (RedisError, OSError) as e:
            raise ConnectionError(f"cannot reach Redis at queue.redis_url={self.url}: {e}") from None
        self.registry = WorkerRegistry(self.pool, self.ttl_s)
        self._pubsub = self.pool.pubsub()
        await self._pubsub.subscribe(PROGRESS, DONE)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._reap_forever())]

    async def close(self) -> None:
        """Stop the background tasks and close the connections."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None

    # ----- listing -----

    async def workers(self) -> list[dict[str, Any]]:
        """Live workers with their info (for /queue)."""
        return await self.registry.workers() if self.registry else []

    async def depth(self) -> int:
        """Arq jobs waiting or running (the jobs the bot has handed to workers)."""
        return await depth(self.pool) if self.pool is not None else 0

    async def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest dead-lettered jobs."""
        return [json.loads(x) for x in await self.pool.lrange(DEAD, 0, limit - 1)]

    # ----- background -----

    async def _listen(self) -> None:
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep listening; the status poll covers the gap
                log.exception("pub/sub listener failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if msg is not None:
                self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
        data = msg["data"].decode() if isinstance(msg["data"], bytes) else msg["data"]
        if channel == DONE:
            if (w := self._waiters.get(data)) is not None:
                w.done.set()
            return
        try:
            p = json.loads(data)
            w = self._waiters.get(p["id"])
            if w is not None:
                w.ctx.progress(int(p["step"]), int(p["total"]), from_b64_png(p.get("preview")))
        except Exception:  # noqa: BLE001 - a bad progress message must not stop the listener
            log.exception("bad progress message %r", data[:200])

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every_s)
            try:
                freed = await self.registry.reap()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("reaping dead workers failed")
                continue
            if freed:
                log.info("reaped workers %s", ", ".join(freed))
            if self.on_workers is not None:
                with contextlib.suppress(Exception):
                    self.on_workers(await self.registry.workers())

    # ----- one job -----

    async def call(self, ctx: Any, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run worker op `op` for ctx.job and return its result dict (raises what the worker raised)."""
        from arq.jobs import Job as ArqJob
        from arq.jobs import JobStatus
        from redis.exceptions import RedisError

        job = ctx.job
        key = arq_id(job.id)
        waiter = self._waiters[key] = _Waiter(ctx)
        try:
            handle = ArqJob(key, self.pool, _queue_name=QUEUE)
            await self._submit(handle, key, op, payload, job.attempts)
            relayed, missing = False, 0
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.done.wait(), 0.1 if ctx.should_cancel() else STATUS_POLL_S)
                waiter.done.clear()
                try:
                    if ctx.should_cancel():
                        if getattr(ctx, "cancel_reason", None) == "shutdown":  # the bot stops: leave it running
                            raise Cancelled(f"job #{job.id}: the bot is stopping; the worker keeps it")
                        if not relayed:
                            relayed = True
                            await self._relay_cancel(key, job.id)
                    status = await self._status(handle, key)
                    if status == JobStatus.complete:
                        info = await handle.result_info()
                        if info is not None:
                            return await self._outcome(job, key, info)
                    missing = missing + 1 if status == JobStatus.not_found else 0
                    if missing >= LOST_CHECKS:  # Redis lost the entry (restarted without its data): again
                        log.warning("%s vanished from Redis; submitting it again", key)
                        await self._submit(handle, key, op, payload, job.attempts)
                        missing = 0
                except (RedisError, OSError) as e:  # Redis restarting: keep waiting, the job is not lost
                    log.warning("Redis unreachable while waiting for %s (%s); retrying", key, e)
                    await asyncio.sleep(REDIS_RETRY_S)
        finally:
            self._waiters.pop(key, None)

    async def _status(self, handle: Any, key: str) -> Any:
        """arq's status of the job, "queued" also when it waits in a worker's own queue (not the handle's)."""
        from arq.jobs import JobStatus

        status = await handle.status()
        if status == JobStatus.not_found and await locate(self.pool, key) is not None:
            return JobStatus.queued
        return status

    async def _submit(self, handle: Any, key: str, op: str, payload: dict, attempt: int) -> None:
        from arq.jobs import JobStatus

        status = await self._status(handle, key)
        if status == JobStatus.complete:
            info = await handle.result_info()
            if info is not None and (info.success or info.kwargs.get("attempt") == attempt):
                return  # done while the bot was away: use it
            await self.pool.delete(f"arq:result:{key}")
        elif status != JobStatus.not_found:
            log.info("re-attaching to %s (%s)", key, status.value)
            return
        await self.pool.zrem(abort_jobs_ss, key)  # a stale abort of an earlier try must not stop this one
        preset = preset_of(payload)
        queue, worker = await route(self.pool, await self.workers(), preset)
        if worker is not None:
            log.info("%s goes to worker %s, which holds %s", key, worker, preset)
        made = await self.pool.enqueue_job(
            op, _job_id=key, _queue_name=queue, payload=payload, attempt=attempt
        )
        if made is None:
            log.info("%s was enqueued concurrently; attaching", key)

    async def _relay_cancel(self, key: str, job_id: int) -> None:
        """Abort the arq job (what arq's Job.abort does, without waiting); one not started leaves the queue now."""
        await self.pool.zadd(abort_jobs_ss, {key: timestamp_ms()})
        queue = await locate(self.pool, key)
        if queue and not await self.pool.exists(ARQ_IN_PROGRESS + key) and await self.pool.zrem(queue, key):
            await self.pool.delete(f"arq:job:{key}")
            raise Cancelled(f"job #{job_id} was cancelled before a worker started it")

    async def _outcome(self, job: Any, key: str, info: Any) -> dict[str, Any]:
        """Turn arq's result into the op's result dict or the matching exception."""
        if not info.success:
            exc = info.result
            if isinstance(exc, asyncio.CancelledError):  # arq aborted it before a worker started it
                raise Cancelled(f"job #{job.id} was cancelled before a worker started it")
            text = str(exc)
            if "retries exceeded" in text:
                await self._dead_letter(job, info.job_try - 1, text)
                raise RemoteJobFailed(
                    f"gave up after {info.job_try - 1} attempts: the worker running this job stopped each time"
                )
            if isinstance(exc, asyncio.TimeoutError | TimeoutError):
                limit = self.settings.queue.job_timeout_s
                await self._dead_letter(job, info.job_try, f"timed out after {limit:.0f} s")
                raise RemoteJobFailed(f"the worker gave up: the job took longer than {limit:.0f} s")
            if isinstance(exc, JobExecutionFailed) and text.endswith("not found"):  # an older worker
                raise RemoteJobFailed(f"a worker without this job's op took it ({text}): upgrade every worker")
            raise RemoteCrash(f"the worker failed: {type(exc).__name__}: {exc}")
        result = info.result
        if not isinstance(result, dict):
            raise RemoteCrash(f"the worker returned {type(result).__name__}, not a dict")
        if "error" in result:
            raise_error(result["error"])
        return result

    async def _dead_letter(self, job: Any, attempts: int, why: str) -> None:
        self.dead_lettered += 1
        entry = {"job_id": job.id, "kind": job.kind, "user_id": job.user_id, "attempts": attempts, "why": why}
        entry["at"] = time.time()
        await self.pool.lpush(DEAD, json.dumps(entry))
        await self.pool.ltrim(DEAD, 0, 999)
        log.error("job %s dead-lettered after %d attempts: %s", job.id, attempts, why)


async def release_orphans(jobs: JobStore, owner: str) -> int:
    """Requeue running jobs leased by `owner` in an earlier life of this bot (it crashed or was killed).

    Their attempt is not counted again; the runner re-claims them and `call()` re-attaches to the arq job
    that is still queued, running or finished on a worker, so no GPU work is repeated.
    """
    released = 0
    for job_id in await jobs.running_ids(owner):
        released += bool(await jobs.release(job_id, owner))
    if released:
        log.warning("re-queued %d job(s) this bot (%s) was running before it restarted", released, owner)
    return released
