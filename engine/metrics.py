"""Prometheus metrics and a health endpoint for the bot and each worker (aiohttp on metrics.host:port).

Each process owns a `Metrics` (its own CollectorRegistry, so tests can run several). Gauges that mirror
other components (queue depth, jobs by state, device bytes, workers) are refreshed by async callbacks at
scrape time; counters and histograms are fed by events (arbiter loads/evictions, finished jobs, batches).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger("atelier.metrics")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
Refresh = Callable[["Metrics"], Awaitable[None]]


class Metrics:
    """The metric families Atelier exports (role "bot" or "worker")."""

    def __init__(self, role: str, ident: str = "") -> None:
        self.role = role
        self.ident = ident
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge("atelier_queue_depth", "Jobs waiting to be claimed", registry=r)
        self.jobs = Gauge("atelier_jobs", "Jobs by state (bot: the jobs table)", ["state"], registry=r)
        self.latency = Histogram(
            "atelier_job_latency_seconds", "Enqueue to final state, by kind and final state",
            ["kind", "state"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.op_seconds = Histogram(
            "atelier_worker_op_seconds", "Worker op run time by op and outcome",
            ["op", "outcome"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.device_used = Gauge("atelier_device_used_bytes", "Bytes the arbiter has loaded", registry=r)
        self.device_budget = Gauge("atelier_device_budget_bytes", "Bytes the arbiter may fill", registry=r)
        self.model_loads = Counter("atelier_model_loads", "Model loads by the arbiter", registry=r)
        self.model_evictions = Counter("atelier_model_evictions", "Models evicted to make room", registry=r)
        self.model_unloads = Counter("atelier_model_unloads", "Idle or explicit model unloads", registry=r)
        self.workers = Gauge("atelier_workers", "Live workers (redis backend)", registry=r)
        self.batch_images = Histogram(
            "atelier_batch_images", "Images per pipeline call", buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=r
        )
        self.batch_requests = Histogram(
            "atelier_batch_requests",
            "Requests per pipeline call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16),
            registry=r,
        )
        self.loop_lag = Histogram(
            "atelier_event_loop_lag_seconds", "How late the event loop ran a periodic tick",
            buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.loop_stalls = Counter("atelier_event_loop_stalls", "Times the loop was blocked over 250 ms", registry=r)
        self._refresh: list[Refresh] = []
        self._arbiter: Any = None

    def add_refresh(self, fn: Refresh) -> None:
        """Run `await fn(metrics)` before every scrape (keep it cheap)."""
        self._refresh.append(fn)

    def watch_arbiter(self, arbiter: Any) -> Callable[[], None]:
        """Count loads/evictions/unloads from arbiter events and export its used/budget bytes."""
        self._arbiter = arbiter

        def on_event(event: Any) -> None:
            counter = {
                "loaded": self.model_loads,
                "evicted": self.model_evictions,
                "unloaded": self.model_unloads,
            }
            if event.kind in counter:
                counter[event.kind].inc()

        return arbiter.subscribe(on_event)

    def watch_jobs(self, jobs: Any) -> None:
        """Export the jobs table: depth and jobs by state (read at scrape time)."""

        async def refresh(m: Metrics) -> None:
            counts = await jobs.counts()
            for state, n in counts.items():
                m.jobs.labels(state).set(n)
            m.queue_depth.set(counts.get("queued", 0))

        self.add_refresh(refresh)

    def job_done(self, job: Any) -> None:
        """Observe a final job's latency (a JobRunner on_done subscriber can call this)."""
        if job.finished_at is not None and job.created_at is not None:
            self.latency.labels(job.kind, job.state).observe(max(0.0, job.finished_at - job.created_at))

    def on_done(self, job: Any) -> None:
        """JobRunner subscriber hook."""
        self.job_done(job)

    def batch(self, requests: int, images: int) -> None:
        """Observe one pipeline call (Batcher on_group hook)."""
        self.batch_requests.observe(requests)
        self.batch_images.observe(images)

    def op(self, name: str, outcome: str, seconds: float) -> None:
        """Observe one worker op."""
        self.op_seconds.labels(name, outcome).observe(seconds)

    async def refresh(self) -> None:
        """Update mirrored gauges; one failing source does not stop the others."""
        if self._arbiter is not None:
            self.device_used.set(self._arbiter.used_bytes)
            self.device_budget.set(self._arbiter.budget)
        for fn in self._refresh:
            try:
                await fn(self)
            except Exception:  # noqa: BLE001 - a scrape must still answer
                log.exception("metrics refresh %r failed", fn)

    async def render(self) -> bytes:
        """The Prometheus text exposition, freshly refreshed."""
        await self.refresh()
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics (Prometheus text) and GET /healthz (JSON) on host:port; port 0 picks a free one."""

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.health = health
        self._runner: Any = None

    async def start(self) -> int:
        """Listen; returns the bound port (OSError with the address if it is taken)."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise OSError(e.errno, f"cannot serve metrics on {self.host}:{self.port}: {e.strerror}") from None
        self.port = site._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener."""
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.host}:{self.port}"

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web

        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: Any) -> Any:
        from aiohttp import web

        body: dict[str, Any] = {"status": "ok", "role": self.metrics.role, "id": self.metrics.ident}
        status = 200
        if self.health is not None:
            try:
                body.update(await self.health())
            except Exception as e:  # noqa: BLE001 - report, do not crash the endpoint
                body.update(status="error", error=f"{type(e).__name__}: {e}")
        if body.get("status") != "ok":
            status = 503
        return web.Response(text=json.dumps(body), status=status, content_type="application/json")
