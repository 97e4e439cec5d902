"""The engine, built in one place from Settings: store, arbiter, models, renderer, handlers, runner, submitter.

Every part gets its dependencies explicitly; `Engine.start(settings, demo=...)` builds and starts them, `stop()`
releases them. With queue.backend "redis" the renderer hands model work to `atelier worker` processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.config import Settings
from engine.jobs.admission import Admission
from engine.jobs.animate import AnimateHandler
from engine.jobs.handlers import GenerationHandlers
from engine.jobs.policy import Requester
from engine.jobs.runner import JobRunner
from engine.jobs.submit import JobSubmitter
from engine.runtime.arbiter import Arbiter
from engine.runtime.batching import DiffusionBatcher
from engine.runtime.models import (
    DEMO_IMAGE_PRESET,
    DEMO_LLM_PRESET,
    DEMO_VISION_PRESET,
    DemoModels,
    ModelRegistry,
)
from engine.runtime.render import LocalRenderer, Renderer
from engine.store import Store, open_store
from engine.store.jobs import Job, JobStore

if TYPE_CHECKING:
    from PIL import Image

    from engine.metrics import Metrics, MetricsServer
    from engine.remote.client import RemoteQueue

log = logging.getLogger("atelier.engine")
RECHECK_S = 1.0  # how often wait() reads a job's row again (a worker in another process may have ended it)


class _Waiters:
    """A runner subscriber resolving Engine.wait() futures when their job ends."""

    def __init__(self) -> None:
        self.futures: dict[int, list[asyncio.Future]] = {}

    def on_done(self, job: Job) -> None:
        for fut in self.futures.pop(job.id, []):
            if not fut.done():
                fut.set_result(job)


@dataclass
class Engine:
    """Everything that runs models and keeps state, for one process."""

    settings: Settings
    store: Store
    arbiter: Arbiter
    jobs: JobStore
    models: ModelRegistry
    renderer: Renderer
    runner: JobRunner
    submitter: JobSubmitter
    demo: bool = False
    remote: RemoteQueue | None = None
    metrics: Metrics | None = None
    metrics_server: MetricsServer | None = None
    _waiters: _Waiters = field(default_factory=_Waiters)

    @classmethod
    async def start(
        cls, settings: Settings, *, demo: bool = False, worker: bool = True, worker_id: str | None = None,
        concurrency: int | None = None, budget_bytes: int | None = None, poll_s: float = 0.5,
    ) -> Engine:  # fmt: skip
        """Build every part from settings and start the runner (worker=False: build only)."""
        if demo:
            from engine.jobs.creation import demo_settings

            settings = demo_settings(settings)  # the tiny edit and draft presets
        store = await open_store(settings)
        arbiter = Arbiter(settings.gpu, budget_bytes=budget_bytes)
        remote: RemoteQueue | None = None
        try:
            jobs = JobStore(store.db, settings.queue)
            models = ModelRegistry(settings, arbiter, store, DemoModels(settings.path("demo_models")))
            runner_box: list[JobRunner] = []
            if settings.queue.backend == "redis":
                from engine.remote.backend import bot_owner, start_remote

                remote, renderer = await start_remote(settings, runner_box)
                worker_id = worker_id or bot_owner()  # stable, so a restarted bot adopts the jobs it was running
            else:
                renderer = _local_renderer(settings, arbiter, models, runner_box)
            preset = DEMO_IMAGE_PRESET if demo else settings.generation.default_preset

            async def preview(kind: str, image: Image.Image) -> Image.Image:
                from engine.runtime.control.render import preprocess

                return await preprocess(models, arbiter, kind, image, settings.control.detect_resolution)

            handlers = GenerationHandlers(store, settings, renderer, models, preset, preview).handlers()
            clips = renderer if remote is not None else None  # on the workers too, with the redis backend
            handlers |= AnimateHandler(store, settings, models, clips).handlers()
            runner = JobRunner(jobs, arbiter, handlers, settings, worker_id,
                               concurrency=concurrency or settings.queue.max_batch, poll_s=poll_s)  # fmt: skip
            runner_box.append(runner)
            admission = Admission(store, settings, arbiter, preset)
            submitter = JobSubmitter(jobs, store, settings, runner.wake, admission, taker=runner)
            engine = cls(settings, store, arbiter, jobs, models, renderer, runner, submitter, demo, remote)
            runner.subscribe(engine._waiters)
            if remote is not None:
                from engine.remote.client import release_orphans

                await release_orphans(jobs, runner.worker_id)
            arbiter.start()
            if worker:
                await runner.start()
        except BaseException:
            await arbiter.stop()
            if remote is not None:
                await remote.close()
            await store.close()
            raise
        return engine

    async def stop(self) -> None:
        """Stop the runner (running jobs go back to the queue), release every model, close the store."""
        try:
            await self.runner.stop()
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            await self.renderer.close()
            if self.remote is not None:
                await self.remote.close()
            await self.arbiter.close()
        finally:
            await self.store.close()

    async def serve_metrics(self, port: int | None = None) -> MetricsServer:
        """Serve /metrics and /healthz on metrics.host:port (port overrides; 0 = any)."""
        from engine.remote.backend import start_bot_metrics

        parts = (self.settings, self.runner, self.jobs, self.arbiter, self.renderer, self.remote)
        self.metrics, self.metrics_server = await start_bot_metrics(*parts, port)
        return self.metrics_server

    async def submit(
        self, kind: str, payload: Mapping[str, object], *, user_id: int, guild_id: int = 0, channel_id: int = 0,
        roles: tuple[int, ...] = (), reply_to: dict | None = None, priority: int = 0,
    ) -> int:  # fmt: skip
        """Submit a job for a requester (authorized, validated, seeded: engine.jobs.submit); its id."""
        if kind not in self.runner.handlers:
            from engine.runtime.diffusion.errors import InvalidRequest

            known = ", ".join(sorted(self.runner.handlers))
            raise InvalidRequest(f"unknown job kind '{kind}'; this engine runs: {known}")
        who = Requester(user_id, guild_id, channel_id, tuple(roles))
        return await self.submitter.submit(who, kind, payload, reply_to=reply_to, priority=priority)

    async def control_preview(self, kind: str, image: Image.Image) -> Image.Image:
        """The control map of `image` for control type `kind`, to show before generating (off-loop)."""
        from engine.runtime.control.render import preprocess

        res = self.settings.control.detect_resolution
        return await preprocess(self.models, self.arbiter, kind, image, res)

    async def workers(self) -> list[dict[str, object]]:
        """Live `atelier worker` processes (redis backend) with their info, for /queue; [] when local."""
        return await self.remote.workers() if self.remote is not None else []

    @property
    def default_image_preset(self) -> str:
        """The image preset used when neither the request nor the user/guild settings name one."""
        return DEMO_IMAGE_PRESET if self.demo else self.settings.generation.default_preset

    @property
    def default_llm_preset(self) -> str:
        """The LLM preset the agent uses."""
        return DEMO_LLM_PRESET if self.demo else self.settings.llm.preset

    @property
    def default_vision_preset(self) -> str | None:
        """The LLM preset critique uses when the agent's preset has no vision projector (None: no vision)."""
        return DEMO_VISION_PRESET if self.demo else self.settings.llm.vision_preset

    async def wait(self, job_id: int, timeout_s: float = 300.0) -> Job:
        """The job's final row once it is done, failed or cancelled (TimeoutError after timeout_s)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.futures.setdefault(job_id, []).append(fut)
        deadline = time.monotonic() + timeout_s
        local = job_id in self.runner.active  # a job this runner holds ends with on_done: no read needed yet
        state = "running"
        try:
            while True:
                if not local:
                    job = await self.jobs.require(job_id)
                    if job.final:
                        return job
                    state = job.state
                local = False
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job #{job_id} is still {state} after {timeout_s:.0f} s")
                # re-check the row now and then: a worker in another process may have ended it
                done, _ = await asyncio.wait({fut}, timeout=min(left, RECHECK_S))
                if done:
                    return fut.result()
        finally:
            waiting = self._waiters.futures.get(job_id, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self._waiters.futures.pop(job_id, None)


async def local_others(runner: JobRunner, batcher: DiffusionBatcher) -> int:
    """Jobs that may still join a batch: running ones not at the batcher yet, plus claimable queued ones (the
    queue is read only when the runner may have some: after an idle claim, no read)."""
    running = len(runner.active) - batcher.batcher.inflight
    free = runner.concurrency - len(runner.active)
    queued = await runner.jobs.queued() if free > 0 and runner.may_have_queued else 0
    return running + min(free, queued)


def _local_renderer(
    settings: Settings, arbiter: Arbiter, models: ModelRegistry, runner_box: list[JobRunner]
) -> LocalRenderer:
    q = settings.queue
    batcher = DiffusionBatcher(
        arbiter, q.max_batch, q.batch_window_ms / 1000, others=lambda: local_others(runner_box[0], batcher)
    )
    return LocalRenderer(models, arbiter, batcher)
