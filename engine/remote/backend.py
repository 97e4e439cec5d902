"""The redis backend of the bot (a RemoteQueue and its renderer), the lease owner, and the bot's metrics."""

from __future__ import annotations

import logging
from typing import Any

from engine.config import Settings
from engine.jobs.runner import JobRunner
from engine.metrics import Metrics, MetricsServer
from engine.remote.client import RemoteQueue
from engine.remote.render import RemoteRenderer
from engine.runtime.arbiter import Arbiter
from engine.runtime.render import LocalRenderer, Renderer
from engine.store.jobs import JobStore

log = logging.getLogger("atelier.queue")
BOT_OWNER_PREFIX = "bot@"  # the redis-backend bot's lease owner: stable across restarts of this host's bot


def bot_owner() -> str:
    """The lease owner the redis-backend bot uses, the same after a restart (so it can adopt its orphans)."""
    import socket

    return f"{BOT_OWNER_PREFIX}{socket.gethostname()}"


async def start_remote(settings: Settings, runner_box: list[JobRunner]) -> tuple[RemoteQueue, RemoteRenderer]:
    """The RemoteQueue (started) and its renderer; the runner (in runner_box once built) tracks worker slots."""
    q = settings.queue
    remote = RemoteQueue(settings)
    await remote.start()

    def capacity(workers: list[dict[str, Any]]) -> None:
        # keep every worker's slots filled plus one batch of headroom, so batches can form
        if runner_box:
            held = sum(int(w.get("max_jobs") or q.max_batch) for w in workers)
            runner_box[0].concurrency = max(q.max_batch, held + q.max_batch)

    remote.on_workers = capacity
    return remote, RemoteRenderer(remote, upscaler_configured=bool(settings.generation.upscaler))


async def start_bot_metrics(
    settings: Settings, runner: JobRunner, jobs: JobStore, arbiter: Arbiter, renderer: Renderer,
    remote: RemoteQueue | None, port: int | None = None,
) -> tuple[Metrics, MetricsServer]:  # fmt: skip
    """Serve /metrics and /healthz for the bot on metrics.host:port; (Metrics, MetricsServer)."""
    metrics = Metrics("bot", runner.worker_id)
    metrics.watch_jobs(jobs)
    metrics.watch_arbiter(arbiter)
    runner.subscribe(metrics)
    if remote is not None:

        async def workers(m: Any) -> None:
            m.workers.set(len(await remote.workers()))

        metrics.add_refresh(workers)
    if isinstance(renderer, LocalRenderer):
        renderer.batcher.batcher.on_group = metrics.batch

    async def health() -> dict[str, Any]:
        counts = await jobs.counts()
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
    return metrics, server
