"""`atelier worker`: an arq worker with its own arbiter and models that runs the bot's GPU work.

Ops (arq function names): "render" (a GenerationRequest, batched across users by engine.runtime.batching),
"upscale", "animate" (a clip, returned as MP4/GIF bytes), and with diagnostics on, "noop" (sleep or spin the
CPU per step; used by tests and bench.queue).
Every op returns a dict; engine errors come back as {"error": ...} (see protocol.py), never as arq failures,
so arq's own failures mean "the worker died or timed out" and are retried up to queue.max_attempts times.
A worker runs on one device (`device`, e.g. cuda:1) with its own arbiter and budget, and reads two queues:
the shared one and its own, where the bot routes jobs for presets this worker holds (routing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.config import Settings
from engine.jobs.clips import LocalClips
from engine.remote.consumers import make_consumers, run_consumers
from engine.remote.opcontext import OpContext
from engine.remote.placement import for_device, parse_device, pin, warm
from engine.remote.protocol import (
    DONE,
    PROGRESS,
    QUEUE,
    decode_clip_spec,
    decode_images,
    decode_request,
    encode_error,
    encode_images,
    redis_settings,
    worker_queue,
)
from engine.remote.registry import WorkerRegistry
from engine.runtime.diffusion.errors import Cancelled
from engine.runtime.render import LocalRenderer

log = logging.getLogger("atelier.worker")
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0  # backoff when Redis goes away
Op = Callable[[OpContext, dict[str, Any]], Awaitable[dict[str, Any]]]


class QueueWorker:
    """One worker process: arq consumer + arbiter + models + heartbeat + (optional) metrics server."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        max_jobs: int | None = None,
        diagnostics: bool = False,
        demo: bool = False,
        poll_s: float = 0.05,
        metrics_port: int | None = None,
        device: str | None = None,
        warm: tuple[str, ...] = (),
    ) -> None:
        self.device = device or settings.gpu.device  # the name shown in /queue ("cpu:1" runs on the cpu)
        self._on, kind = parse_device(self.device)
        self.settings = for_device(settings, kind) if device else settings
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.queue = worker_queue(self.id)
        self.warm = tuple(warm)
        self.max_jobs = max_jobs or settings.queue.max_batch
        if self.max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {self.max_jobs}")
        self.diagnostics = diagnostics
        self.demo = demo
        self.poll_s = poll_s
        self.metrics_port = metrics_port
        self.ops: dict[str, Op] = {"render": self.op_render, "upscale": self.op_upscale, "animate": self.op_animate}
        if diagnostics:
            self.ops["noop"] = self.op_noop
        self.redis: Any = None
        self.registry: WorkerRegistry | None = None
        self.arbiter: Any = None
        self.models: Any = None
        self.batcher: Any = None
        self.renderer: LocalRenderer | None = None
        self.clips: LocalClips | None = None
        self.metrics: Any = None
        self.metrics_server: Any = None
        self.running: dict[str, float] = {}
        self.done = 0
        self.failed = 0
        self._consumers: list[Any] = []
        self._stop = asyncio.Event()
        self._pending: set[asyncio.Task] = set()
        self.started_at = time.time()

    # ----- setup -----

    async def _setup(self) -> None:
        from arq import func
        from arq.connections import create_pool

        from engine.metrics import Metrics, MetricsServer
        from engine.runtime.arbiter import Arbiter
        from engine.runtime.batching import DiffusionBatcher
        from engine.runtime.models import DemoModels, ModelRegistry

        q = self.settings.queue
        from redis.exceptions import RedisError

        try:
            self.redis = await create_pool(redis_settings(q.redis_url), default_queue_name=QUEUE)
        except (RedisError, OSError) as e:
            raise ConnectionError(f"cannot reach Redis at queue.redis_url={q.redis_url}: {e}") from None
        self.registry = WorkerRegistry(self.redis, q.worker_ttl_s)
        pin(self._on)
        self.arbiter = Arbiter(self.settings.gpu, device=self._on)
        self.arbiter.start()
        self.arbiter.subscribe(self._models_changed)
        self.models = ModelRegistry(
            self.settings, self.arbiter, None, DemoModels(self.settings.path("demo_models"))
        )
        self.metrics = Metrics("worker", self.id)
        self.metrics.watch_arbiter(self.arbiter)
        self.batcher = DiffusionBatcher(
            self.arbiter,
            q.max_batch,
            q.batch_window_ms / 1000,  # a lone request waits this long for company (no hint here)
            on_group=self.metrics.batch,
        )
        self.renderer = LocalRenderer(self.models, self.arbiter, self.batcher)  # the bot's own render path
        self.clips = LocalClips(self.models)  # and its own video path
        if self.settings.metrics.enabled:
            port = self.settings.metrics.port if self.metrics_port is None else self.metrics_port
            self.metrics_server = MetricsServer(self.metrics, self.settings.metrics.host, port, self.health)
            await self.metrics_server.start()
        functions = [func(self._arq_op(name), name=name, max_tries=q.max_attempts) for name in self.ops]
        self._consumers = make_consumers(
            [QUEUE, self.queue],
            self.max_jobs,
            functions=functions,
            redis_pool=self.redis,
            job_timeout=q.job_timeout_s,
            keep_result=24 * 3600,
            poll_delay=self.poll_s,
            max_tries=q.max_attempts,
            handle_signals=False,
            allow_abort_jobs=True,  # a user's cancel is arq's Job.abort (engine.remote.client._relay_cancel)
            health_check_interval=max(1, int(q.worker_ttl_s / 3)),
            on_job_start=self._job_start,
            after_job_end=self._job_end,
            log_results=False,
        )

    async def health(self) -> dict[str, Any]:
        """The /healthz body."""
        return {
            "status": "ok",
            "role": "worker",
            "id": self.id,
            "running": len(self.running),
            "done": self.done,
        }

    def info(self) -> dict[str, Any]:
        """What the registry shows for this worker."""
        stats = self.arbiter.stats() if self.arbiter else {}
        loaded = [m["name"] for m in self.arbiter.snapshot() if m["loaded"]] if self.arbiter else []
        url = (
            f"http://{self.settings.metrics.host}:{self.metrics_server.port}" if self.metrics_server else None
        )
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device if self.device != "auto" or not self.arbiter else self.arbiter.device,
            "queue": self.queue,
            "started_at": self.started_at,
            "running": sorted(self.running),
            "max_jobs": self.max_jobs,
            "done": self.done,
            "failed": self.failed,
            "models": loaded,
            "used_bytes": stats.get("used_bytes", 0),
            "budget_bytes": stats.get("budget_bytes", 0),
            "ops": sorted(self.ops),
            "metrics_url": url,
        }

    # ----- arq plumbing -----

    def _arq_op(self, name: str) -> Callable[..., Awaitable[dict]]:
        async def run(ctx: dict, payload: dict, attempt: int = 0) -> dict:
            return await self._run_op(name, ctx["job_id"], payload, attempt, int(ctx.get("job_try") or 1))

        run.__qualname__ = name
        return run

    async def _job_start(self, ctx: dict) -> None:
        self.running[ctx["job_id"]] = time.time()
        await self.registry.track(self.id, ctx["job_id"])

    async def _job_end(self, ctx: dict) -> None:
        self.running.pop(ctx["job_id"], None)
        await self.registry.untrack(self.id, ctx["job_id"])
        await self.redis.publish(DONE, ctx["job_id"])  # after arq stored the result

    def publish_progress(self, msg: dict[str, Any]) -> None:
        import json

        task = asyncio.ensure_future(self.redis.publish(PROGRESS, json.dumps(msg)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _run_op(self, name: str, key: str, payload: dict, attempt: int, job_try: int) -> dict:
        t0 = time.monotonic()
        oc = OpContext(self.publish_progress, key, attempt)
        log.info("%s: %s (try %d)", key, name, job_try)
        try:
            result = await self._until_aborted(oc, self.ops[name](oc, payload))
            self.done += 1
            outcome = "done"
        except Exception as e:  # noqa: BLE001 - every engine error goes back to the bot as data
            if not isinstance(e, Cancelled | ValueError) and type(e).__name__ not in ("JobFailed",):
                log.warning("%s: %s failed: %s", key, name, e, exc_info=True)
            result = {"error": encode_error(e)}
            self.failed += 1
            outcome = "cancelled" if isinstance(e, Cancelled) else "failed"
        result["worker"], result["try"] = self.id, job_try
        self.metrics.op(name, outcome, time.monotonic() - t0)
        return result

    async def _until_aborted(self, oc: OpContext, work: Awaitable[dict]) -> dict:
        """Run an op; when arq aborts it (a user's cancel), flag it and let the model thread stop at its next
        step, so the arbiter lease is released only after the thread is done with the model."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            aborting = [c.aborting_tasks for c in self._consumers if oc.key in c.aborting_tasks]
            if not aborting:
                task.cancel()  # shutting down: arq runs the job again elsewhere
                raise
            aborting[0].discard(oc.key)
            oc.request_cancel()
            with contextlib.suppress(Cancelled):
                await task
            raise Cancelled(f"{oc.key} was cancelled") from None

    # ----- ops -----

    async def op_render(self, oc: OpContext, payload: dict) -> dict:
        """payload {"preset": validated image preset, "request": encode_request(req)} -> {"images"}."""
        images = await self.renderer.generate(payload["preset"], decode_request(payload["request"]), oc)
        model = await self.renderer.model(payload["preset"])
        return {"images": encode_images(images), "fallbacks": list(model.last_fallbacks)}

    async def op_upscale(self, oc: OpContext, payload: dict) -> dict:
        """payload {"preset", "image": png, "factor", "prompt", "seed", "kw", "upscaler": bool} -> {"images"}."""
        image = decode_images([{"png": payload["image"]}])[0]
        args = (payload["preset"], image, payload["factor"], payload["prompt"], payload["seed"], payload.get("kw", {}))
        big = await self.renderer.upscale(*args, oc, upscaler=bool(payload.get("upscaler")))
        return {"images": encode_images([big])}

    async def op_animate(self, oc: OpContext, payload: dict) -> dict:
        """payload encode_clip_spec(spec) -> {"mp4", "gif", "reencodes", "spoiler"}, encoded under its limits."""
        return dataclasses.asdict(await self.clips.clip(decode_clip_spec(payload), oc))

    async def op_noop(self, oc: OpContext, payload: dict) -> dict:
        """Diagnostics: `steps` steps of `step_s` seconds (sleeping, or burning CPU time if `spin`)."""
        steps, step_s = int(payload.get("steps", 1)), float(payload.get("step_s", 0.0))
        if not (0 <= steps <= 10_000 and 0 <= step_s <= 60):
            raise ValueError(f"noop wants 0..10000 steps of 0..60 s, got {steps} x {step_s}")
        exit_at = payload.get("exit_at_step")
        spin = bool(payload.get("spin"))

        def work() -> None:
            for i in range(steps):
                if oc.should_cancel():
                    raise Cancelled(f"cancelled at step {i}")
                if exit_at is not None and i == int(exit_at):
                    os._exit(3)  # diagnostics only: simulate a worker crash mid-job
                if spin:  # burn step_s of this thread's CPU time (not wall time), so cores are the limit
                    end = time.thread_time() + step_s
                    while time.thread_time() < end:
                        pass
                else:
                    time.sleep(step_s)
                oc.progress(i + 1, steps)

        await asyncio.to_thread(work)
        return {"ok": True, "pid": os.getpid(), "echo": payload.get("echo")}

    # ----- lifecycle -----

    def _models_changed(self, event: Any) -> None:
        """Beat at once when a model is loaded or dropped, so the bot routes by what this worker holds now."""
        if event.kind in ("loaded", "evicted", "unloaded") and self.registry is not None:
            task = asyncio.ensure_future(self.registry.beat(self.id, self.info()))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _beat_forever(self) -> None:
        every = self.settings.queue.worker_ttl_s / 3
        while True:
            try:
                await self.registry.beat(self.id, self.info())
                await self.registry.reap()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis hiccup: try again at the next beat
                log.exception("heartbeat failed")
            await asyncio.sleep(every)

    def request_stop(self) -> None:
        """Stop taking jobs; running ones finish first (a second request exits at once)."""
        if self._stop.is_set():
            os._exit(1)
        self._stop.set()

    async def run(
        self, ready: Callable[[QueueWorker], Any] | None = None, handle_signals: bool = True
    ) -> None:
        """Register, consume jobs until request_stop() (or SIGTERM/SIGINT), then drain and unregister."""
        await self._setup()
        if self.demo:  # build the offline demo models before taking jobs, not during the first one
            await self.models.demo.paths()
        await warm(self.renderer, self.arbiter, self.settings, list(self.warm))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if handle_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.registry.beat(self.id, self.info())
        beat = loop.create_task(self._beat_forever())
        consume = loop.create_task(self._consume_forever())
        log.info(
            "worker %s on %s consuming %s and %s (ops: %s, max_jobs %d)",
            self.id, self.device, QUEUE, self.queue, ", ".join(self.ops), self.max_jobs,
        )  # fmt: skip
        if ready is not None:
            ready(self)
        try:
            stop = loop.create_task(self._stop.wait())
            await asyncio.wait({consume, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            tasks = []
            for c in self._consumers:
                c.allow_pick_jobs = False
                tasks += list(c.tasks.values())
            if tasks:
                log.info("finishing %d running job(s) before exiting", len(tasks))
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await self._shutdown(consume)

    async def _consume_forever(self) -> None:
        """arq's consumer, started again after Redis goes away (a restart): the worker never quietly exits."""
        delay = RECONNECT_MIN_S
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await run_consumers(self._consumers)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a lost Redis connection: reconnect with backoff
                if time.monotonic() - started > RECONNECT_MAX_S:
                    delay = RECONNECT_MIN_S
                log.warning("worker %s lost Redis (%s); reconnecting in %.0f s", self.id, e, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(RECONNECT_MAX_S, delay * 2)

    async def _shutdown(self, consume: asyncio.Task) -> None:
        with contextlib.suppress(Exception):
            await self.registry.unregister(self.id)
        consume.cancel()
        await asyncio.gather(consume, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self.batcher.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await self.arbiter.close()
        await self.redis.aclose()
