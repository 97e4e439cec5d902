"""Worker registration: heartbeat keys with a TTL, a listing for /queue, and reaping of dead workers.

A worker's heartbeat key expires queue.worker_ttl_s after its last beat. The reaper (run by the bot and by
every worker) takes each registered worker whose key is gone and frees the arq jobs it was running by
deleting their in-progress keys, so another worker picks them up at once instead of after arq's job timeout,
and moves jobs routed to a gone worker's own queue back to the shared queue (routing.py).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from engine.remote.protocol import ARQ_IN_PROGRESS, WORKERS, worker_jobs_key, worker_key
from engine.remote.routing import move_to_shared, requeue_orphans

log = logging.getLogger("atelier.queue")


class WorkerRegistry:
    """Registry operations over one redis.asyncio client."""

    def __init__(self, redis: Any, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the worker TTL must be positive, got {ttl_s}")
        self.redis = redis
        self.ttl_ms = int(ttl_s * 1000)

    async def beat(self, worker_id: str, info: dict[str, Any]) -> None:
        """Register or refresh a worker with its info (host, pid, jobs, models, metrics URL...)."""
        body = json.dumps({**info, "id": worker_id, "beat_at": time.time()})
        async with self.redis.pipeline(transaction=True) as tr:
            tr.sadd(WORKERS, worker_id)
            tr.set(worker_key(worker_id), body, px=self.ttl_ms)
            await tr.execute()

    async def track(self, worker_id: str, job_key: str) -> None:
        """Note that the worker is running an arq job."""
        await self.redis.sadd(worker_jobs_key(worker_id), job_key)

    async def untrack(self, worker_id: str, job_key: str) -> None:
        """The worker is done with an arq job."""
        await self.redis.srem(worker_jobs_key(worker_id), job_key)

    async def unregister(self, worker_id: str) -> None:
        """A clean exit: forget the worker and hand jobs still routed to it to the shared queue."""
        async with self.redis.pipeline(transaction=True) as tr:
            tr.delete(worker_key(worker_id), worker_jobs_key(worker_id))
            tr.srem(WORKERS, worker_id)
            await tr.execute()
        await move_to_shared(self.redis, worker_id)

    async def workers(self) -> list[dict[str, Any]]:
        """Live workers (heartbeat not expired), sorted by id."""
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(WORKERS))
        if not ids:
            return []
        out = []
        for wid, raw in zip(ids, await self.redis.mget([worker_key(w) for w in ids]), strict=True):
            if raw is not None:
                out.append({**json.loads(raw), "id": wid})
        return out

    async def reap(self) -> dict[str, list[str]]:
        """Forget workers whose heartbeat expired; free their jobs for others. Returns {worker: [jobs]}."""
        ids = [m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(WORKERS)]
        beats = await self.redis.mget([worker_key(w) for w in ids]) if ids else []
        dead = [w for w, b in zip(ids, beats, strict=True) if b is None]
        live = [w for w, b in zip(ids, beats, strict=True) if b is not None]
        freed: dict[str, list[str]] = {}
        for wid in dead:
            jobs = [
                j.decode() if isinstance(j, bytes) else j
                for j in await self.redis.smembers(worker_jobs_key(wid))
            ]
            mine = []
            for job in jobs:
                if not await self._held_by_live(job, live):
                    await self.redis.delete(ARQ_IN_PROGRESS + job)
                    mine.append(job)
            async with self.redis.pipeline(transaction=True) as tr:
                tr.delete(worker_jobs_key(wid))
                tr.srem(WORKERS, wid)
                await tr.execute()
            freed[wid] = mine
            log.warning(
                "worker %s stopped heartbeating; freed its jobs %s for other workers", wid, mine or "none"
            )
        await requeue_orphans(self.redis, set(live))
        return freed

    async def _held_by_live(self, job: str, live: list[str]) -> bool:
        for wid in live:
            if await self.redis.sismember(worker_jobs_key(wid), job):
                return True
        return False
