"""The model registry (one Managed model per preset, registered with the arbiter) and the offline demo models."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.runtime.arbiter import Arbiter
from engine.runtime.control.models import ControlRegistry
from engine.runtime.managed import Managed, ModelNotAvailable
from engine.store import Store

log = logging.getLogger("atelier.models")
DEMO_PREFIX = "demo:"
PKG_PREFIX = "pkg:"
# "demo:<name>" model references -> keys of engine.runtime.diffusion.testmodels.ensure_demo_models()
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
    "demo:tiny-kontext": "kontext",
    "demo:tiny-klein": "klein",
    "demo:tiny-qwen-edit": "qwen-edit",
    "demo:tiny-qwen-edit-plus": "qwen-edit-plus",
    "demo:tiny-motion-adapter": "motion-adapter",
    "demo:tiny-flux": "flux",
    "demo:tiny-redux": "redux",
}
EDIT_DEMO_KEYS = ("kontext", "klein", "qwen-edit", "qwen-edit-plus")  # testmodels_edit.EDIT_DEMO_BUILDERS
DEMO_IMAGE_PRESET = "demo"
DEMO_LLM_PRESET = "smollm2-135m"
DEMO_VISION_PRESET = "smollm2-135m-vision"
TINY_MMPROJ = "demo:tiny-mmproj"
NOT_RUNTIME = ("scope", "role", "vram_mb", "description")  # stored preset keys the runtimes do not take


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
        self._resolved: dict[str, str] = {}  # reference -> its folder, once built or found
        self._lock = asyncio.Lock()

    def _built(self) -> bool:
        marker = "atelier_tiny.json"
        dirs = ("tiny-sd15", "tiny-sdxl", "tiny-safety")
        lora = self.root / "tiny-lora" / "pytorch_lora_weights.safetensors"
        return all((self.root / d / marker).is_file() for d in dirs) and lora.is_file()

    async def paths(self) -> dict[str, Path]:
        """{"sd15", "sdxl", "safety", "lora"} paths, building them (in a thread) the first time."""
        from engine.runtime.diffusion.testmodels import ensure_demo_models

        async with self._lock:
            if self._paths is None:
                if not self._built():
                    log.warning("building the offline demo models under %s (first use only)", self.root)
                self._paths = await asyncio.to_thread(ensure_demo_models, self.root)
        return self._paths

    async def control_paths(self) -> dict[str, Path]:
        """The tiny ControlNets and IP-Adapters (built on first use, beside the demo pipelines)."""
        from engine.runtime.diffusion.testmodels_control import ensure_control_demo_models

        base = await self.paths()
        async with self._lock:
            if self._control is None:
                self._control = await asyncio.to_thread(
                    ensure_control_demo_models, self.root, base["sd15"], base["sdxl"]
                )
        return self._control

    async def resolve(self, ref: str, who: str) -> str:
        """The local path for a "demo:..." reference, built on first use and then remembered (no disk check per
        job)."""
        found = self._resolved.get(ref)
        if found is None:
            found = self._resolved[ref] = await self._build(ref, who)
        return found

    async def _build(self, ref: str, who: str) -> str:
        if ref == TINY_MMPROJ:
            from engine.runtime.llm.tiny_mmproj import ensure_tiny_mmproj

            return str(await asyncio.to_thread(ensure_tiny_mmproj, self.root / "tiny-mmproj"))
        key = DEMO_REFS.get(ref)
        if key is None:
            known = ", ".join([*DEMO_REFS, TINY_MMPROJ])
            raise ModelNotAvailable(f"{who}: unknown demo model '{ref}'; known: {known}")
        if key.startswith(("controlnet-", "ip-adapter-")):
            return str((await self.control_paths())[key])
        if key == "motion-adapter":
            from engine.runtime.diffusion.testmodels_video import ensure_tiny_motion_adapter

            async with self._lock:
                return str(await asyncio.to_thread(ensure_tiny_motion_adapter, self.root / "tiny-motion-adapter"))
        if key in ("flux", "redux"):
            from engine.runtime.diffusion.testmodels_redux import ensure_tiny_flux, ensure_tiny_redux

            build = ensure_tiny_flux if key == "flux" else ensure_tiny_redux
            async with self._lock:
                return str(await asyncio.to_thread(build, self.root / f"tiny-{key}"))
        if key in EDIT_DEMO_KEYS:
            from engine.runtime.diffusion.testmodels_edit import ensure_edit_demo_model

            async with self._lock:
                return str(await asyncio.to_thread(ensure_edit_demo_model, key, self.root))
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
        from engine.runtime.llm.chunks import CHUNKS_PREFIX, resolve_chunks

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
        out = {k: v for k, v in preset.items() if k not in NOT_RUNTIME}
        who = f"image preset '{preset['name']}'"
        out["model"] = await self._ref(str(preset["model"]), who)
        if out.get("safety_checker"):
            out["safety_checker"] = await self._ref(str(out["safety_checker"]), who)
        elif str(preset["model"]).startswith(DEMO_PREFIX):
            out["safety_checker"] = await self.demo.resolve("demo:tiny-safety", who)
        for part in ("motion_adapter", "redux"):
            if out.get(part):
                out[part] = await self._ref(str(out[part]), who)
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
        from engine.runtime.diffusion import DiffusionModel

        p = runtime_preset
        identity = {k: p.get(k) for k in ("model", "family", "safety_checker")} | {"kind": "diffusion"}

        def make(name: str) -> DiffusionModel:
            from engine.runtime.diffusion.edit import EditModel, is_edit_family

            cls = EditModel if is_edit_family(str(p.get("family"))) else DiffusionModel
            return cls({**p, "name": name}, self.settings)

        return await self._register(p["name"], identity, make)

    async def video_model(self, runtime_preset: dict[str, Any]) -> Any:
        """The VideoModel for a runtime video preset (registered, not loaded)."""
        from engine.runtime.diffusion.video import VideoModel

        p = runtime_preset
        identity = {k: p.get(k) for k in ("model", "family", "motion_adapter", "safety_checker")} | {"kind": "video"}
        return await self._register(p["name"], identity, lambda name: VideoModel({**p, "name": name}, self.settings))

    async def upscaler(self) -> Any | None:
        """The dedicated upscaler (generation.upscaler) as a registered UpscalerModel, or None."""
        from engine.runtime.diffusion import UpscalerModel

        ref = self.settings.generation.upscaler
        if not ref:
            return None
        ref = await self._ref(ref, "generation.upscaler")
        models_dir = self.settings.path("models")
        return await self._register(
            "upscaler", {"upscaler": ref}, lambda name: UpscalerModel(ref, models_dir, name=name)
        )

    async def llm_preset(self, name: str, user_id: int = 0, guild_id: int = 0) -> Any:
        """The runtime engine.runtime.llm.LlmPreset for a stored LLM preset (pkg:/demo: references resolved)."""
        from engine.runtime.llm import parse_preset

        data = await self.store.presets.resolve("llm", name, user_id, guild_id)
        raw = {k: v for k, v in data.items() if k not in NOT_RUNTIME}
        who = f"LLM preset '{data['name']}'"
        raw["model"] = await self._ref(str(raw["model"]), who)
        if raw.get("mmproj"):
            raw["mmproj"] = await self._ref(str(raw["mmproj"]), who)
        return parse_preset(raw)

    async def llm_model(self, name: str, user_id: int = 0, guild_id: int = 0) -> Any:
        """The LlamaModel for an LLM preset (registered, not loaded)."""
        from engine.runtime.llm import LlamaModel

        preset = await self.llm_preset(name, user_id, guild_id)
        identity = preset.model_dump() | {"kind": "llm"}

        def make(arbiter_name: str) -> LlamaModel:
            return LlamaModel.from_settings(
                preset.model_copy(update={"name": arbiter_name}), self.settings, device=self.arbiter.device
            )

        return await self._register(preset.name, identity, make)
