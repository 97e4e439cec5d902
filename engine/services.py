"""Services: everything a front needs (store, arbiter, job queue, runner, model registry), built from Settings."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.arbiter import Arbiter
from engine.config import Settings
from engine.control.models import ControlRegistry
from engine.diffusion.errors import InvalidRequest
from engine.managed import Managed, ModelNotAvailable
from engine.store import Store, open_store
from engine.store.jobs import Job, JobStore

log = logging.getLogger("atelier.services")
DEMO_PREFIX = "demo:"
PKG_PREFIX = "pkg:"
# "demo:<name>" model references -> keys of engine.diffusion.testmodels.ensure_demo_models()
DEMO_REFS = {
    "demo:tiny-sd": "sd15",
    "demo:tiny-sd15": "sd15",
    "demo:tiny-sdxl": "sdxl",
    "demo:tiny-safety": "safety",
    "demo:tiny-lora": "lora",
    "demo:tiny-controlnet-sd15": "controlnet-sd15",
    "demo:tiny-controlnet-sdxl": "controlnet-sdxl",
    "demo:tiny-ip-adapter-sd15": "ip-adapter-sd15",
    "demo:tiny-ip-adapter-sdxl": "ip-adapter-sdxl",
}
DEMO_IMAGE_PRESET = "demo"
DEMO_LLM_PRESET = "smollm2-135m"
DEMO_VISION_PRESET = "smollm2-135m-vision"
TINY_MMPROJ = "demo:tiny-mmproj"
_NOT_RUNTIME = ("scope", "role", "vram_mb", "description")  # stored preset keys the runtimes do not take


def resolve_pkg(ref: str, who: str) -> str:
    """'pkg:DIST/relpath' -> the path of relpath inside the installed distribution DIST (no import)."""
    dist, _, rel = ref.removeprefix(PKG_PREFIX).partition("/")
    if not dist or not rel:
        raise ModelNotAvailable(f"{who}: '{ref}' is not of the form pkg:DIST/relpath")
    try:
        found = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(
            f"{who}: the Python package '{dist}' is not installed (pip install {dist})"
        ) from None
    if not found.is_file():
        raise ModelNotAvailable(
            f"{who}: '{rel}' is not in the installed package '{dist}' (looked at {found})"
        )
    return str(found)


class DemoModels:
    """The offline tiny models, built under paths.demo_models on first use (once per directory)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._paths: dict[str, Path] | None = None
        self._control: dict[str, Path] | None = None
        self._lock = asyncio.Lock()

    def _built(self) -> bool:
        marker = "atelier_tiny.json"
        dirs = ("tiny-sd15", "tiny-sdxl", "tiny-safety")
        lora = self.root / "tiny-lora" / "pytorch_lora_weights.safetensors"
        return all((self.root / d / marker).is_file() for d in dirs) and lora.is_file()

    async def paths(self) -> dict[str, Path]:
        """{"sd15", "sdxl", "safety", "lora"} paths, building them (in a thread) the first time."""
        from engine.diffusion.testmodels import ensure_demo_models

        async with self._lock:
            if self._paths is None:
                if not self._built():
                    log.warning("building the offline demo models under %s (first use only)", self.root)
                self._paths = await asyncio.to_thread(ensure_demo_models, self.root)
        return self._paths

    async def control_paths(self) -> dict[str, Path]:
        """The tiny ControlNets and IP-Adapters (built on first use, beside the demo pipelines)."""
        from engine.diffusion.testmodels_control import ensure_control_demo_models

        base = await self.paths()
        async with self._lock:
            if self._control is None:
                self._control = await asyncio.to_thread(
                    ensure_control_demo_models, self.root, base["sd15"], base["sdxl"]
                )
        return self._control

    async def resolve(self, ref: str, who: str) -> str:
        """The local path for a "demo:..." reference."""
        if ref == TINY_MMPROJ:
            from engine.llm.tiny_mmproj import ensure_tiny_mmproj

            return str(await asyncio.to_thread(ensure_tiny_mmproj, self.root / "tiny-mmproj"))
        key = DEMO_REFS.get(ref)
        if key is None:
            known = ", ".join([*DEMO_REFS, TINY_MMPROJ])
            raise ModelNotAvailable(f"{who}: unknown demo model '{ref}'; known: {known}")
        if key.startswith(("controlnet-", "ip-adapter-")):
            return str((await self.control_paths())[key])
        return str((await self.paths())[key])


def _key(data: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


class ModelRegistry:
    """Creates one Managed model per distinct preset and registers it with the arbiter on first use.

    Arbiter names are preset names; a same-named preset that loads something else gets "name@hash".
    """

    def __init__(self, settings: Settings, arbiter: Arbiter, store: Store, demo: DemoModels) -> None:
        self.settings = settings
        self.arbiter = arbiter
        self.store = store
        self.demo = demo
        self._by_key: dict[str, Managed] = {}
        self._lock = asyncio.Lock()
        self.control = ControlRegistry(self)

    async def _ref(self, ref: str, who: str) -> str:
        from engine.llm.chunks import CHUNKS_PREFIX, resolve_chunks

        if ref.startswith(DEMO_PREFIX):
            return await self.demo.resolve(ref, who)
        if ref.startswith(PKG_PREFIX):
            return resolve_pkg(ref, who)
        if ref.startswith(CHUNKS_PREFIX):
            return await asyncio.to_thread(resolve_chunks, ref, self.settings.path("models"), who)
        return ref

    async def lora_ref(self, ref: str) -> str:
        """A LoRA reference with demo:/pkg: prefixes resolved to a path."""
        return await self._ref(ref, f"LoRA '{ref}'")

    async def image_preset(self, preset: dict[str, Any]) -> dict[str, Any]:
        """The runtime form of a validated image preset: demo:/pkg: references resolved to paths."""
        out = {k: v for k, v in preset.items() if k not in _NOT_RUNTIME}
        who = f"image preset '{preset['name']}'"
        out["model"] = await self._ref(str(preset["model"]), who)
        if out.get("safety_checker"):
            out["safety_checker"] = await self._ref(str(out["safety_checker"]), who)
        elif str(preset["model"]).startswith(DEMO_PREFIX):
            out["safety_checker"] = await self.demo.resolve("demo:tiny-safety", who)
        return out

    async def _register(self, base: str, identity: dict[str, Any], make: Any) -> Managed:
        key = _key(identity)
        async with self._lock:
            if key not in self._by_key:
                taken = {s["name"] for s in self.arbiter.snapshot()}
                name = base if base not in taken else f"{base}@{key}"
                model = make(name)
                self.arbiter.register(model)
                self._by_key[key] = model
                log.info("registered %s model %s", model.kind, name)
            return self._by_key[key]

    async def image_model(self, runtime_preset: dict[str, Any]) -> Any:
        """The DiffusionModel for a runtime image preset (registered, not loaded)."""
        from engine.diffusion import DiffusionModel

        p = runtime_preset
        identity = {k: p.get(k) for k in ("model", "family", "safety_checker")} | {"kind": "diffusion"}

        def make(name: str) -> DiffusionModel:
            return DiffusionModel({**p, "name": name}, self.settings)

        return await self._register(p["name"], identity, make)

    async def upscaler(self) -> Any | None:
        """The dedicated upscaler (generation.upscaler) as a registered UpscalerModel, or None."""
        from engine.diffusion import UpscalerModel

        ref = self.settings.generation.upscaler
        if not ref:
            return None
        ref = await self._ref(ref, "generation.upscaler")
        models_dir = self.settings.path("models")
        return await self._register(
            "upscaler", {"upscaler": ref}, lambda name: UpscalerModel(ref, models_dir, name=name)
        )

    async def llm_preset(self, name: str, user_id: int = 0, guild_id: int = 0) -> Any:
        """The runtime engine.llm.LlmPreset for a stored LLM preset (pkg:/demo: references resolved)."""
        from engine.llm import parse_preset

        data = await self.store.presets.resolve("llm", name, user_id, guild_id)
        raw = {k: v for k, v in data.items() if k not in _NOT_RUNTIME}
        who = f"LLM preset '{data['name']}'"
        raw["model"] = await self._ref(str(raw["model"]), who)
        if raw.get("mmproj"):
            raw["mmproj"] = await self._ref(str(raw["mmproj"]), who)
        return parse_preset(raw)

    async def llm_model(self, name: str, user_id: int = 0, guild_id: int = 0) -> Any:
        """The LlamaModel for an LLM preset (registered, not loaded)."""
        from engine.llm import LlamaModel

        preset = await self.llm_preset(name, user_id, guild_id)
        identity = preset.model_dump() | {"kind": "llm"}

        def make(arbiter_name: str) -> LlamaModel:
            return LlamaModel.from_settings(preset.model_copy(update={"name": arbiter_name}), self.settings)

        return await self._register(preset.name, identity, make)


class _Waiters:
    """A runner subscriber resolving Services.wait() futures when their job ends."""

    def __init__(self) -> None:
        self.futures: dict[int, list[asyncio.Future]] = {}

    def on_done(self, job: Job) -> None:
        for fut in self.futures.pop(job.id, []):
            if not fut.done():
                fut.set_result(job)


@dataclass
class Services:
    """The engine as one object: `await Services.start(settings, demo=...)`, then `await stop()`."""

    settings: Settings
    store: Store
    arbiter: Arbiter
    jobs: JobStore
    runner: Any  # engine.runner.JobRunner
    models: ModelRegistry
    demo: bool = False
    _waiters: _Waiters = field(default_factory=_Waiters)
    renderer: Any = None  # engine.queue.render.LocalRenderer | RemoteRenderer (queue.backend)
    remote: Any = None  # engine.queue.client.RemoteQueue with the redis backend
    metrics: Any = None  # engine.metrics.Metrics once serve_metrics() ran
    metrics_server: Any = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        demo: bool = False,
        worker: bool = True,
        worker_id: str | None = None,
        concurrency: int | None = None,
        budget_bytes: int | None = None,
        poll_s: float = 0.5,
    ) -> Services:
        """Open the store, build the arbiter and the runner (with the generation handlers); start the worker.

        concurrency (jobs run at once) defaults to queue.max_batch so compatible jobs can share a batch;
        with queue.backend "redis" model work goes to `atelier worker` processes (engine/queue).
        """
        from engine.generate import generation_handlers
        from engine.queue.backend import attach_backend, bot_owner, detach_backend
        from engine.runner import JobRunner

        store = await open_store(settings)
        arbiter: Arbiter | None = None
        services: Services | None = None
        try:
            arbiter = Arbiter(settings.gpu, budget_bytes=budget_bytes)
            jobs = JobStore(store.db, settings.queue)
            registry = ModelRegistry(settings, arbiter, store, DemoModels(settings.path("demo_models")))
            services = cls(settings, store, arbiter, jobs, None, registry, demo)
            if worker_id is None and settings.queue.backend == "redis":
                worker_id = bot_owner()  # stable, so a restarted bot adopts the jobs it was running
            services.runner = JobRunner(
                jobs, arbiter, generation_handlers(services), settings, worker_id,
                concurrency=concurrency or settings.queue.max_batch, poll_s=poll_s,
            )  # fmt: skip
            services.runner.subscribe(services._waiters)
            await attach_backend(services)
            arbiter.start()
            if worker:
                await services.runner.start()
        except BaseException:
            if arbiter is not None:
                await arbiter.stop()
            if services is not None:
                await detach_backend(services)
            await store.close()
            raise
        return services

    async def stop(self) -> None:
        """Stop the worker (running jobs go back to the queue), release every model, close the store."""
        from engine.queue.backend import detach_backend

        try:
            await self.runner.stop()
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            await detach_backend(self)
            await self.arbiter.close()
        finally:
            await self.store.close()

    async def serve_metrics(self, port: int | None = None) -> Any:
        """Serve /metrics and /healthz on metrics.host:port (port overrides; 0 = any); returns the server."""
        from engine.queue.backend import start_bot_metrics

        self.metrics_server = await start_bot_metrics(self, port)
        return self.metrics_server

    async def control_preview(self, kind: str, image: Any) -> Any:
        """The control map of `image` for control type `kind`, to show before generating (off-loop)."""
        from engine.control.render import preprocess

        res = self.settings.control.detect_resolution
        return await preprocess(self.models, self.arbiter, kind, image, res)

    async def workers(self) -> list[dict[str, Any]]:
        """Live `atelier worker` processes (redis backend) with their info, for /queue; [] when local."""
        return await self.remote.workers() if self.remote is not None else []

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def default_image_preset(self) -> str:
        """The image preset used when neither the request nor the user/guild settings name one."""
        return DEMO_IMAGE_PRESET if self.demo else self.settings.generation.default_preset

    @property
    def default_llm_preset(self) -> str:
        """The LLM preset the agent uses."""
        return DEMO_LLM_PRESET if self.demo else self.settings.llm.preset

    async def submit(
        self,
        kind: str,
        payload: dict,
        *,
        user_id: int,
        guild_id: int = 0,
        channel_id: int = 0,
        priority: int = 0,
        reply_to: dict | None = None,
    ) -> int:
        """Enqueue a job (QuotaExceeded past the daily quota) and wake the worker; returns the job id."""
        if kind not in self.runner.handlers:
            known = ", ".join(sorted(self.runner.handlers))
            raise InvalidRequest(f"unknown job kind '{kind}'; this engine runs: {known}")
        job_id = await self.jobs.enqueue(user_id, guild_id, channel_id, kind, payload, priority, reply_to)
        self.runner.wake()
        return job_id

    @property
    def default_vision_preset(self) -> str | None:
        """The LLM preset critique uses when the agent's preset has no vision projector (None: no vision)."""
        return DEMO_VISION_PRESET if self.demo else self.settings.llm.vision_preset

    @property
    def llm_preset(self) -> str:
        """Alias of default_llm_preset (the name tools.context.Services uses)."""
        return self.default_llm_preset

    async def wait_for_job(self, job_id: int, timeout: float) -> Job:
        """Alias of wait() with the signature tools.context.Services uses."""
        return await self.wait(job_id, timeout)

    async def wait(self, job_id: int, timeout_s: float = 300.0) -> Job:
        """Wait until the job is done, failed or cancelled; returns its final row (TimeoutError after timeout_s)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.futures.setdefault(job_id, []).append(fut)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                job = await self.jobs.require(job_id)
                if job.final:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job #{job_id} is still {job.state} after {timeout_s:.0f} s")
                # re-check the row now and then: a worker in another process may have ended it
                done, _ = await asyncio.wait({fut}, timeout=min(left, 1.0))
                if done:
                    return fut.result()
        finally:
            waiting = self._waiters.futures.get(job_id, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self._waiters.futures.pop(job_id, None)
