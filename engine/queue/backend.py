"""The queue.backend switch for Services: who renders ("local" batcher or "redis" workers), plus bot metrics."""

from __future__ import annotations

import logging
from typing import Any

from engine.batching import DiffusionBatcher
from engine.queue.render import LocalRenderer, RemoteRenderer

log = logging.getLogger("atelier.queue")
BOT_OWNER_PREFIX = "bot@"  # the redis-backend bot's lease owner: stable across restarts of this host's bot


def bot_owner() -> str:
    """The lease owner the redis-backend bot uses, the same after a restart (so it can adopt its orphans)."""
    import socket

    return f"{BOT_OWNER_PREFIX}{socket.gethostname()}"


async def local_others(runner: Any, batcher: DiffusionBatcher) -> int:
    """Jobs that may still join a batch: running ones not at the batcher yet, plus claimable queued ones."""
    running = len(runner.active) - batcher.batcher.inflight
    free = runner.concurrency - len(runner.active)
    queued = (await runner.jobs.counts())["queued"] if free > 0 else 0
    return running + min(free, queued)


async def attach_backend(services: Any) -> None:
    """Set services.renderer (and services.remote for redis) from settings.queue.backend."""
    settings, runner = services.settings, services.runner
    q = settings.queue
    if q.backend == "redis":
        from engine.queue.client import RemoteQueue, release_orphans

        remote = RemoteQueue(settings)
        await remote.start()
        services.remote = remote
        base = runner.concurrency

        def capacity(workers: list[dict[str, Any]]) -> None:
            # keep every worker's slots filled plus one batch of headroom, so batches can form
            held = sum(int(w.get("max_jobs") or q.max_batch) for w in workers)
            runner.concurrency = max(base, held + q.max_batch)

        capacity([])
        remote.on_workers = capacity
        services.renderer = RemoteRenderer(remote, upscaler_configured=bool(settings.generation.upscaler))
        await release_orphans(services.jobs, runner.worker_id)
        return
    batcher = DiffusionBatcher(
        services.arbiter,
        q.max_batch,
        q.batch_window_ms / 1000,
        others=lambda: local_others(runner, batcher),
        on_group=(lambda n, i: services.metrics.batch(n, i)) if getattr(services, "metrics", None) else None,
    )
    services.renderer = LocalRenderer(services.models, services.arbiter, batcher)


async def detach_backend(services: Any) -> None:
    """Close what attach_backend opened."""
    if getattr(services, "renderer", None) is not None:
        await services.renderer.close()
    if getattr(services, "remote", None) is not None:
        await services.remote.close()


async def start_bot_metrics(services: Any, port: int | None = None) -> Any:
    """Serve /metrics and /healthz for the bot on metrics.host:port; returns the MetricsServer."""
    from engine.metrics import Metrics, MetricsServer

    settings = services.settings
    metrics = services.metrics = Metrics("bot", services.runner.worker_id)
    metrics.watch_jobs(services.jobs)
    metrics.watch_arbiter(services.arbiter)
    services.runner.subscribe(metrics)
    remote = getattr(services, "remote", None)
    if remote is not None:

        async def workers(m: Any) -> None:
            m.workers.set(len(await remote.workers()))

        metrics.add_refresh(workers)
    renderer = getattr(services, "renderer", None)
    if isinstance(renderer, LocalRenderer):
        renderer.batcher.batcher.on_group = metrics.batch

    async def health() -> dict[str, Any]:
        counts = await services.jobs.counts()
        out: dict[str, Any] = {"backend": settings.queue.backend, "queued": counts["queued"]}
        if remote is not None:
            await remote.pool.ping()
            out["workers"] = len(await remote.workers())
        return out

    server = MetricsServer(
        metrics, settings.metrics.host, settings.metrics.port if port is None else port, health
    )
    await server.start()
    log.info("metrics on %s/metrics", server.url)
    return server
