"""Model-aware routing: a job goes to a free worker that already holds its preset, else to the shared queue.

Every worker consumes the shared arq queue and its own queue (`worker_queue(id)`). Workers publish the
presets their arbiter holds in their heartbeat info; `route()` picks the least-loaded live worker holding
the job's preset whose running + routed jobs are below its max_jobs, and returns its queue. A job routed to
a worker that then dies or exits is moved back to the shared queue by `requeue_orphans()` (run by every
reaper), so routing never strands work.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.remote.protocol import ARQ_IN_PROGRESS, QUEUE, ROUTED, worker_jobs_key, worker_queue

log = logging.getLogger("atelier.queue")


def preset_of(payload: dict[str, Any]) -> str | None:
    """The image preset a worker op needs: payload["preset"] as a preset dict's name or a plain name."""
    preset = payload.get("preset")
    if isinstance(preset, dict):
        preset = preset.get("name")
    return preset if isinstance(preset, str) and preset else None


async def load(redis: Any, worker_id: str) -> int:
    """Jobs a worker is running plus jobs waiting in its own queue."""
    return int(await redis.scard(worker_jobs_key(worker_id))) + int(
        await redis.zcard(worker_queue(worker_id))
    )


async def route(redis: Any, workers: list[dict[str, Any]], preset: str | None) -> tuple[str, str | None]:
    """(queue, worker id): a free live worker holding `preset`, the least loaded first; else (QUEUE, None)."""
    if preset is None:
        return QUEUE, None
    best: tuple[int, str] | None = None
    for w in workers:
        if preset not in (w.get("models") or []) or w.get("queue") != worker_queue(w["id"]):
            continue  # an older worker without its own queue cannot be routed to
        busy = await load(redis, w["id"])
        if busy < int(w.get("max_jobs") or 1) and (best is None or busy < best[0]):
            best = (busy, w["id"])
    if best is None:
        return QUEUE, None
    await redis.sadd(ROUTED, best[1])
    return worker_queue(best[1]), best[1]


async def locate(redis: Any, key: str) -> str | None:
    """The queue (shared or a worker's own) that holds arq job `key` now, if any."""
    if await redis.zscore(QUEUE, key) is not None:
        return QUEUE
    for wid in await _routed(redis):
        if await redis.zscore(worker_queue(wid), key) is not None:
            return worker_queue(wid)
    return None


async def depth(redis: Any) -> int:
    """Arq jobs waiting or running in the shared queue and every worker's own queue."""
    total = int(await redis.zcard(QUEUE))
    for wid in await _routed(redis):
        total += int(await redis.zcard(worker_queue(wid)))
    return total


async def move_to_shared(redis: Any, worker_id: str) -> list[str]:
    """Move the jobs waiting in a worker's own queue (not running) to the shared queue; their ids."""
    own = worker_queue(worker_id)
    moved = []
    for raw, score in await redis.zrange(own, 0, -1, withscores=True):
        key = raw.decode() if isinstance(raw, bytes) else raw
        if await redis.exists(ARQ_IN_PROGRESS + key):
            continue  # running there: arq keeps the id queued until it finishes
        async with redis.pipeline(transaction=True) as tr:
            tr.zadd(QUEUE, {key: score})
            tr.zrem(own, key)
            await tr.execute()
        moved.append(key)
    if not await redis.zcard(own):
        await redis.srem(ROUTED, worker_id)
    return moved


async def requeue_orphans(redis: Any, live: set[str]) -> dict[str, list[str]]:
    """Hand jobs routed to workers that are gone (dead or exited) back to the shared queue."""
    out: dict[str, list[str]] = {}
    for wid in await _routed(redis):
        if wid not in live and (moved := await move_to_shared(redis, wid)):
            out[wid] = moved
            log.warning("worker %s is gone; moved its routed jobs %s to the shared queue", wid, moved)
    return out


async def _routed(redis: Any) -> list[str]:
    return sorted(m.decode() if isinstance(m, bytes) else m for m in await redis.smembers(ROUTED))
