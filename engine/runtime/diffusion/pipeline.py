"""DiffusionModel: one image preset as an arbiter-managed model (load/unload/estimate) that generates images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image

from engine.config import Settings
from engine.runtime.diffusion import denoise, fastpaths, oom, weighting
from engine.runtime.diffusion.addons import AddonManager
from engine.runtime.diffusion.denoise import Progress, ShouldCancel
from engine.runtime.diffusion.dtypes import dtype_kwargs, pick_dtype
from engine.runtime.diffusion.errors import Cancelled, GenerationFailed, InvalidRequest, ModelNotAvailable
from engine.runtime.diffusion.holder import PipelineHolder
from engine.runtime.diffusion.loras import LoraManager
from engine.runtime.diffusion.redux import ReduxPrior, redux_bytes
from engine.runtime.diffusion.reference import ReferenceManager, blend_embeds
from engine.runtime.diffusion.request import FAMILIES, GenerationRequest, build_request, check_limits
from engine.runtime.diffusion.resolve import FAMILY_BYTES, looks_like_path, resolve_model, weights_bytes
from engine.runtime.diffusion.safety import (
    DEFAULT_SAFETY_CHECKER,
    ClipSafetyChecker,
    SafetyChecker,
    apply_policy,
    check_blank,
)
from engine.runtime.diffusion.schedulers import scheduler_for

log = logging.getLogger("atelier.engine")
_AUTO = object()
_SINGLE_FILE = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
}


class DiffusionModel(PipelineHolder):
    """An image preset {name, model, family, scheduler, steps, cfg, width, height, negative, loras, safety_checker}.

    Implements engine.runtime.managed.Managed; generate()/upscale() are blocking (run them in a worker thread).
    """

    kind = "diffusion"

    def __init__(
        self, preset: dict[str, Any], settings: Settings | None = None, safety_checker: Any = _AUTO
    ) -> None:
        if not preset.get("name") or not preset.get("model"):
            raise InvalidRequest(f"an image preset needs 'name' and 'model'; got keys {sorted(preset)}")
        self.preset = dict(preset)
        self.name: str = preset["name"]
        self.family: str = preset.get("family", "sd15")
        if self.family not in FAMILIES:
            raise InvalidRequest(f"preset {self.name}: unknown family '{self.family}'; use one of {FAMILIES}")
        self.settings = settings or Settings()
        self.models_dir: Path = self.settings.path("models")
        if safety_checker is _AUTO:
            ref = preset.get("safety_checker") or DEFAULT_SAFETY_CHECKER
            safety_checker = ClipSafetyChecker(ref, self.models_dir)
        self.safety: SafetyChecker | None = safety_checker
        self.loras = LoraManager(self.name, self.models_dir)
        self.addons = AddonManager(self.name, self.family, self.models_dir)
        self.reference = ReferenceManager(self.name, self.models_dir)
        self.redux = ReduxPrior(self.name, self.models_dir)  # FLUX /blend: loaded on the first Redux reference
        self.degraded: set[str] = set()
        self.fast: set[str] = set()  # fast paths applied at load (fastpaths.apply)
        self.last_fallbacks: list[str] = []
        super().__init__()

    # ----- Managed -----
    def _who(self) -> str:
        return f"image preset '{self.name}'"

    def estimate_bytes(self) -> int:
        """Weights at the load dtype (from safetensors headers; a FLUX Redux prior included) + 25% working memory
        + the safety checker."""
        device = self.settings.gpu.device if self.settings.gpu.device != "auto" else "cuda"
        itemsize = pick_dtype(self.settings.gpu.dtype, device, self.family).itemsize
        try:
            path = resolve_model(self.preset["model"], self._who(), self.models_dir, download=False)
            weights = weights_bytes(path, itemsize)
        except ModelNotAvailable:
            if looks_like_path(self.preset["model"]):
                raise
            weights = FAMILY_BYTES[self.family]
        weights += redux_bytes(self.preset.get("redux"), self._who(), self.models_dir, itemsize)
        extra = self.safety.estimate_bytes() if self.safety is not None else 0
        return int(weights * 1.25) + extra

    @property
    def warmup_s(self) -> float:
        """Seconds a first load adds for compile + warm-up (the arbiter adds it to its load-time guess)."""
        return fastpaths.warmup_guess_s(self.settings.gpu, self.family)

    def _load_pipes(self, device: str) -> None:
        """The pipeline (and safety checker) onto `device`, hub ids downloaded first (load() holds the lock)."""
        path = resolve_model(self.preset["model"], self._who(), self.models_dir)
        pipe = self._from_disk(path, pick_dtype(self.settings.gpu.dtype, device, self.family))
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.fast = fastpaths.apply(pipe, self.settings.gpu, self.preset)
        self.loras.hotswap = "lora_hotswap" in self.fast
        self._pipes["txt2img"] = pipe
        self._device = device
        if self.safety is not None:
            self.safety.load(device)
        log.info("loaded %s (%s) from %s on %s", self.name, self.family, path, device)

    def _from_disk(self, path: Path, dtype: Any) -> Any:
        import diffusers

        kw: dict[str, Any] = dtype_kwargs(dtype)
        if self.family == "sd15":
            kw.update(safety_checker=None, requires_safety_checker=False)
        try:
            if path.is_file():
                return getattr(diffusers, _SINGLE_FILE[self.family]).from_single_file(str(path), **kw)
            return diffusers.AutoPipelineForText2Image.from_pretrained(str(path), **kw)
        except (OSError, ValueError, KeyError) as e:
            raise ModelNotAvailable(
                f"{self._who()}: cannot load a {self.family} pipeline from {path}: {e}"
            ) from e

    def unload(self) -> None:
        """Drop every pipeline reference (hooks removed first), the LoRAs and the checker; empty the CUDA cache."""
        with self._lock:
            base = self._pipes.get("txt2img")
            if base is not None and "cpu_offload" in self.degraded:
                base.remove_all_hooks()
            self.loras.loaded = {}
            self.loras.slots = []
            self.fast = set()
            self.addons.forget()
            self.reference.loaded = None
            self.redux.clear()
            self._pipes.clear()
            self.degraded.clear()
            if self.safety is not None:
                self.safety.unload()
            oom.free_memory()

    # ----- generation -----
    def request(self, aspect: str | None = None, **fields: Any) -> GenerationRequest:
        """Build a validated request from this preset's defaults plus overrides (raises InvalidRequest)."""
        return build_request(self.preset, self.settings.generation, aspect=aspect, **fields)

    def _pipe_for(self, mode: str, controlnets: list[Any] | None = None) -> Any:
        """The pipeline for `mode`, sharing the base's components; with ControlNets a fresh ControlNet pipeline."""
        import diffusers

        auto = {
            "txt2img": diffusers.AutoPipelineForText2Image,
            "img2img": diffusers.AutoPipelineForImage2Image,
            "inpaint": diffusers.AutoPipelineForInpainting,
        }
        if controlnets:
            net = controlnets[0] if len(controlnets) == 1 else list(controlnets)
            try:
                pipe = auto[mode].from_pipe(self._pipes["txt2img"], controlnet=net)
            except (ValueError, KeyError, TypeError) as e:
                raise InvalidRequest(
                    f"{self._who()}: no {self.family} ControlNet pipeline for {mode}: {e}"
                ) from e
            pipe.set_progress_bar_config(disable=True)
            return pipe
        if mode not in self._pipes:
            pipe = auto[mode].from_pipe(self._pipes["txt2img"])
            pipe.set_progress_bar_config(disable=True)
            self._pipes[mode] = pipe
        return self._pipes[mode]

    def _drop_derived(self) -> None:
        """Forget img2img/inpaint pipelines (rebuilt from the base on next use, e.g. after an IP-Adapter change)."""
        for mode in [m for m in self._pipes if m != "txt2img"]:
            del self._pipes[mode]

    def _call_pipeline(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        """The single place the diffusers pipeline is invoked (tests inject failures here), in inference mode:
        no autograd bookkeeping per operation (the same pixels, about 1 % less time for a small call)."""
        import torch

        with torch.inference_mode():
            return pipe(**kwargs)

    def _check(self, req: GenerationRequest) -> None:
        check_limits(req, self.settings.generation)
        if req.family != self.family:
            raise InvalidRequest(f"request is for {req.family} but preset {self.name} is {self.family}")
        if not self._pipes:
            raise GenerationFailed(f"{self._who()} is not loaded; the arbiter must load it first")

    def denoise(
        self,
        req: GenerationRequest,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        controlnets: list[Any] | None = None,
    ) -> list[Any]:
        """Run the pipeline for every seed with the OOM fallback; float (H, W, 3) arrays, unchecked.

        `controlnets`: loaded ControlNet modules, one per req.controls entry, in order.
        """
        self._check(req)
        nets = list(controlnets or [])
        if len(nets) != len(req.controls):
            raise GenerationFailed(
                f"{len(req.controls)} control(s) requested but {len(nets)} ControlNet(s) given"
            )
        if should_cancel is not None and should_cancel():
            raise Cancelled("cancelled before the first step")
        fastpaths.before_loras(self._pipes["txt2img"], req.loras, self.fast)
        self.loras.apply(self._pipes["txt2img"], req.loras)
        changed = self.addons.apply(self._pipes["txt2img"], req.embeddings, req.vae)
        if self.reference.apply(self._pipes["txt2img"], req.reference) or changed:
            self._drop_derived()
        self.redux.apply(self._pipes["txt2img"], req.reference)
        every = self.settings.generation.preview_every_steps
        cb = denoise.step_callback(
            self.family, (req.width, req.height), every, progress, should_cancel, req.steps
        )
        base_config = self._pipes["txt2img"].scheduler.config

        def run(seeds: list[int]) -> list[Any]:
            pipe = self._pipe_for(req.mode, nets)  # looked up per call: CPU offload rebuilds derived pipes
            pipe.scheduler = scheduler_for(pipe.scheduler, req.scheduler, base_config, self.family)
            fastpaths.vae_tiling(pipe, self.settings.gpu, req.width, req.height, self.degraded)
            kw = denoise.pipeline_kwargs(req, seeds, cb)
            weighting.apply(pipe, self.family, kw, [req.prompt], [req.negative])
            blend_embeds(pipe, req.reference, req.cfg, kw)
            self.redux.embed(req.reference, kw)
            out = self._call_pipeline(pipe, kw)
            return list(out.images)

        self.last_fallbacks = []
        what = f"{req.width}x{req.height} batch {req.batch} with {self.name}"
        return oom.run_with_fallback(
            run,
            req.seeds(),
            vae_low_memory=self._vae_low_memory,
            cpu_offload=self._cpu_offload,
            what=what,
            record=self.last_fallbacks,
        )

    def generate(
        self, req: GenerationRequest, progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None, controlnets: list[Any] | None = None,
    ) -> list[Image.Image]:  # fmt: skip
        """Generate req.batch images (image i from seed req.seed + i), checked for blank/NaN and safety.

        Raises InvalidRequest, Cancelled, GenerationFailed, BlankImage or SafetyBlocked (see errors.py).
        Every returned image has info["atelier_seed"] and info["atelier_spoiler"].
        """
        with self._lock:
            arrays = self.denoise(req, progress, should_cancel, controlnets)
            check_blank(arrays, req.seeds())
            images = [denoise.to_pil(a) for a in arrays]
            if req.mode == "inpaint":
                images = [denoise.composite_inpaint(im, req) for im in images]
            policy = req.safety or self.settings.generation.safety
            return apply_policy(images, req.seeds(), self.safety, policy)

    def upscale(
        self, image: Image.Image, factor: int, prompt: str, seed: int, upscaler: Any = None, **kw: Any
    ) -> Image.Image:
        """Upscale 2x/4x: with `upscaler` (a loaded UpscalerModel for generation.upscaler) when given,
        else the tiled img2img "hires" pass. kw: see engine.runtime.diffusion.upscale.tiled_upscale."""
        from engine.runtime.diffusion.upscale import model_upscale, tiled_upscale

        with self._lock:
            if upscaler is not None:
                return model_upscale(self, upscaler, image, factor, prompt, seed, **kw)
            return tiled_upscale(self, image, factor, prompt, seed, **kw)

    # ----- OOM fallbacks -----
    def _vae_low_memory(self) -> None:
        vae = self._pipes["txt2img"].vae
        vae.enable_tiling()
        vae.enable_slicing()
        self.degraded.add("vae_tiling")

    def _cpu_offload(self) -> None:
        if self._device.startswith("cuda"):
            self._pipes["txt2img"].enable_model_cpu_offload()
            self._drop_derived()  # rebuilt from the offloaded base by _pipe_for
        self.degraded.add("cpu_offload")
