"""VideoModel: a video preset (AnimateDiff on SD1.5, Wan 2.x) as an arbiter-managed model that renders frames.

A video preset is an image preset whose family is one of VIDEO_FAMILIES. AnimateDiff loads the SD1.5 pipeline
named by `model` with the MotionAdapter named by `motion_adapter`; it animates an image through its
video-to-video pipeline (the image repeated, re-noised by `strength`). Wan uses WanPipeline (text) or
WanImageToVideoPipeline (image). render() is blocking: run it in a worker thread inside arbiter.use(...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.config import Settings
from engine.runtime.diffusion import oom
from engine.runtime.diffusion.denoise import Progress, ShouldCancel, generators, step_callback, to_pil
from engine.runtime.diffusion.dtypes import dtype_kwargs, pick_dtype
from engine.runtime.diffusion.errors import (
    Cancelled,
    GenerationFailed,
    InvalidRequest,
    ModelNotAvailable,
    SafetyBlocked,
)
from engine.runtime.diffusion.holder import PipelineHolder
from engine.runtime.diffusion.resolve import ADAPTER_PATTERNS, looks_like_path, resolve_model, weights_bytes
from engine.runtime.diffusion.safety import (
    DEFAULT_SAFETY_CHECKER,
    SPOILER_KEY,
    ClipSafetyChecker,
    SafetyChecker,
    apply_policy,
)
from engine.runtime.diffusion.schedulers import make_scheduler

log = logging.getLogger("atelier.engine")
_AUTO = object()


@dataclass(frozen=True)
class VideoFamily:
    """How a family makes video: its pipelines, default and largest frame counts, size multiple, footprint."""

    text: str | None  # the text-to-video pipeline class (None: it needs an image)
    image: str | None  # the image-to-video pipeline class (None: text only)
    frames: int
    fps: int
    max_frames: int
    multiple: int  # width and height must be multiples of this
    bytes: int  # rough device footprint (weights) before the files are present
    frame_step: int = 1  # Wan: frame counts of the form 4k + 1


VIDEO_FAMILIES: dict[str, VideoFamily] = {
    "animatediff": VideoFamily(
        "AnimateDiffPipeline", "AnimateDiffVideoToVideoPipeline", 16, 8, 32, 8, 4_500_000_000
    ),
    "wan": VideoFamily("WanPipeline", None, 33, 16, 81, 16, 17_000_000_000, 4),  # 1.3B + UMT5-XXL
    "wan-i2v": VideoFamily(None, "WanImageToVideoPipeline", 33, 16, 81, 16, 42_000_000_000, 4),  # 14B
}


def is_video_family(family: str) -> bool:
    """True for the families that make videos (VIDEO_FAMILIES)."""
    return family in VIDEO_FAMILIES


def video_family(family: str, preset: str) -> VideoFamily:
    """The family's VideoFamily; InvalidRequest naming the video families for a family without video."""
    found = VIDEO_FAMILIES.get(family)
    if found is None:
        raise InvalidRequest(
            f"preset '{preset}' ({family}) makes images, not videos; video presets have family "
            f"{', '.join(VIDEO_FAMILIES)}"
        )
    return found


def frame_count(frames: int, fam: VideoFamily) -> int:
    """The frame count the family renders for a request of `frames` (Wan: rounded down to 4k + 1)."""
    if fam.frame_step > 1:
        return max(1, (frames - 1) // fam.frame_step * fam.frame_step + 1)
    return frames


@dataclass(frozen=True)
class VideoRequest:
    """One clip: prompt, frames at fps, size, sampling, seed, and an optional first image."""

    prompt: str
    negative: str = ""
    frames: int = 16
    fps: int = 8
    width: int = 512
    height: int = 512
    steps: int = 25
    cfg: float = 7.5
    seed: int = 0
    image: Image.Image | None = None
    strength: float = 0.8  # AnimateDiff from an image: how far the frames may move from it
    safety: str = "block"

    def params(self) -> dict[str, object]:
        """What the history row records (the image itself is the parent generation or an upload)."""
        out: dict[str, object] = {
            k: getattr(self, k) for k in ("frames", "fps", "width", "height", "steps", "cfg", "seed")
        }
        out["mode"] = "img2vid" if self.image is not None else "txt2vid"
        if self.image is not None:
            out["strength"] = self.strength
        return out


def check_request(
    fam: VideoFamily, preset: str, *, image: bool, frames: int, width: int, height: int
) -> None:
    """InvalidRequest for a clip the family cannot render (from an image or not, its frames, its size)."""
    if not image and fam.text is None:
        raise InvalidRequest(
            f"preset '{preset}' animates an image: attach one (or use a text-to-video preset)"
        )
    if image and fam.image is None:
        raise InvalidRequest(f"preset '{preset}' makes video from text only; use an image-to-video preset")
    if not 1 <= frames <= fam.max_frames:
        raise InvalidRequest(f"preset '{preset}' renders 1 to {fam.max_frames} frames, not {frames}")
    for side, v in (("width", width), ("height", height)):
        if v % fam.multiple:
            raise InvalidRequest(f"preset '{preset}': {side} must be a multiple of {fam.multiple}, got {v}")


def call_kwargs(req: VideoRequest, family: str, callback: Any) -> dict[str, Any]:
    """The keyword arguments of the family's pipeline call for `req`."""
    kw: dict[str, Any] = {
        "prompt": req.prompt,
        "num_frames": req.frames,
        "width": req.width,
        "height": req.height,
        "num_inference_steps": req.steps,
        "guidance_scale": req.cfg,
        "generator": generators([req.seed])[0],
        "output_type": "np",
        "callback_on_step_end": callback,
    }
    if req.negative:
        kw["negative_prompt"] = req.negative
    if req.image is None:
        return kw
    image = req.image.convert("RGB").resize((req.width, req.height), Image.Resampling.LANCZOS)
    if family == "animatediff":  # video-to-video from the still image; it takes no num_frames
        kw.pop("num_frames")
        kw |= {"video": [image] * req.frames, "strength": req.strength}
    else:
        kw["image"] = image
    return kw


def animatediff_scheduler(config: Any, name: str) -> Any:
    """AnimateDiff's recipe (DDIM, linear betas, linspace timesteps) for "default", else the named scheduler."""
    import diffusers

    if name != "default":
        return make_scheduler(name, config, "sd15")
    return diffusers.DDIMScheduler.from_config(
        config, beta_schedule="linear", clip_sample=False, timestep_spacing="linspace", steps_offset=1
    )


class VideoModel(PipelineHolder):
    """A video preset {name, model, family in VIDEO_FAMILIES, motion_adapter, steps, cfg, width, height}.

    Implements engine.runtime.managed.Managed.
    """

    kind = "video"

    def __init__(self, preset: dict[str, Any], settings: Settings | None = None, safety_checker: Any = _AUTO):
        self.name: str = preset["name"]
        self.family: str = preset.get("family", "")
        self.fam = video_family(self.family, self.name)
        if self.family == "animatediff" and not preset.get("motion_adapter"):
            raise InvalidRequest(f"video preset '{self.name}' (animatediff) needs a motion_adapter")
        self.preset = dict(preset)
        self.settings = settings or Settings()
        self.models_dir: Path = self.settings.path("models")
        if safety_checker is _AUTO:
            safety_checker = ClipSafetyChecker(
                preset.get("safety_checker") or DEFAULT_SAFETY_CHECKER, self.models_dir
            )
        self.safety: SafetyChecker | None = safety_checker
        super().__init__()

    def _who(self) -> str:
        return f"video preset '{self.name}'"

    def _refs(self) -> list[str]:
        return [str(r) for r in (self.preset["model"], self.preset.get("motion_adapter")) if r]

    # ----- Managed -----
    def estimate_bytes(self) -> int:
        """Weights at the load dtype (local files or the hub cache, else the family's size) + 40% for activations."""
        device = self.settings.gpu.device if self.settings.gpu.device != "auto" else "cuda"
        itemsize = pick_dtype(self.settings.gpu.dtype, device, self.family).itemsize
        total = 0
        try:
            for ref in self._refs():
                total += weights_bytes(
                    resolve_model(ref, self._who(), self.models_dir, download=False), itemsize
                )
        except ModelNotAvailable:
            if any(looks_like_path(r) for r in self._refs()):
                raise
            total = self.fam.bytes
        extra = self.safety.estimate_bytes() if self.safety is not None else 0
        return int(total * 1.4) + extra  # many frames of activations: more working memory than one image

    def _load_pipes(self, device: str) -> None:
        """The pipeline (with its motion adapter) and the safety checker onto `device` (load() holds the lock)."""
        dtype = pick_dtype(self.settings.gpu.dtype, device, self.family)
        pipe = self._from_disk(resolve_model(self.preset["model"], self._who(), self.models_dir), dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipes["base"] = pipe
        self._device = device
        if self.safety is not None and self.settings.generation.safety != "off":
            self.safety.load(device)
        log.info("loaded video preset %s (%s) on %s", self.name, self.family, device)

    def _from_disk(self, path: Path, dtype: Any) -> Any:
        import diffusers

        kw: dict[str, Any] = dtype_kwargs(dtype)
        try:
            if self.family == "animatediff":
                ref = str(self.preset["motion_adapter"])
                adapter_path = resolve_model(ref, self._who(), self.models_dir, patterns=list(ADAPTER_PATTERNS))
                kw["motion_adapter"] = diffusers.MotionAdapter.from_pretrained(str(adapter_path), **kw)
                pipe = diffusers.AnimateDiffPipeline.from_pretrained(str(path), **kw)
                pipe.scheduler = animatediff_scheduler(
                    pipe.scheduler.config, self.preset.get("scheduler", "default")
                )
                return pipe
            import torch

            if dtype != torch.float32:  # Wan's VAE is kept in fp32 (its recipe), the rest at `dtype`
                kw["vae"] = diffusers.AutoencoderKLWan.from_pretrained(
                    str(path), subfolder="vae", **dtype_kwargs(torch.float32)
                )
            cls = getattr(diffusers, self.fam.text or self.fam.image or "")
            return cls.from_pretrained(str(path), **kw)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelNotAvailable(
                f"{self._who()}: cannot load a {self.family} video pipeline from {path}: {e}"
            ) from e

    def unload(self) -> None:
        """Drop every pipeline reference and the safety checker; empty the CUDA cache."""
        with self._lock:
            self._pipes.clear()
            if self.safety is not None:
                self.safety.unload()
            oom.free_memory()

    # ----- rendering -----
    def _pipe(self, image: bool) -> Any:
        """The text-to-video pipeline, or the image-to-video one (AnimateDiff's shares the base's components)."""
        import diffusers

        if not image or self.family != "animatediff":
            return self._pipes["base"]
        if "image" not in self._pipes:
            pipe = diffusers.AnimateDiffVideoToVideoPipeline.from_pipe(self._pipes["base"])
            pipe.set_progress_bar_config(disable=True)
            self._pipes["image"] = pipe
        return self._pipes["image"]

    def render(
        self, req: VideoRequest, progress: Progress | None = None, should_cancel: ShouldCancel | None = None
    ) -> list[Image.Image]:
        """The clip's frames (RGB), checked for NaN output and by the safety policy on a few frames.

        Raises InvalidRequest, Cancelled, GenerationFailed or SafetyBlocked. The first frame's
        info["atelier_spoiler"] tells whether the clip must be posted as a spoiler.
        """
        check_request(self.fam, self.name, image=req.image is not None, frames=req.frames, width=req.width,
                      height=req.height)  # fmt: skip
        with self._lock:
            if not self._pipes:
                raise GenerationFailed(f"{self._who()} is not loaded; the arbiter must load it first")
            if should_cancel is not None and should_cancel():
                raise Cancelled("cancelled before the first step")
            total = max(1, int(req.steps * req.strength)) if req.image is not None else req.steps
            cb = step_callback(self.family, (req.width, req.height), 10**9, progress, should_cancel, total)
            pipe = self._pipe(req.image is not None)
            import torch

            try:
                with torch.inference_mode():  # no autograd bookkeeping, as for images
                    out = pipe(**call_kwargs(req, self.family, cb))
            except Exception as e:
                if oom.is_oom(e):
                    oom.free_memory()
                    raise GenerationFailed(
                        f"out of memory rendering {req.frames} frames at {req.width}x{req.height} with "
                        f"{self.name}: ask for fewer frames or a smaller size"
                    ) from e
                raise
            frames = self._frames(out.frames[0], req)
            return self._checked(frames, req)

    @staticmethod
    def _frames(video: Any, req: VideoRequest) -> list[Image.Image]:
        arr = np.asarray(video, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise GenerationFailed(
                f"the video (seed {req.seed}) contains NaN/inf values (often fp16 overflow)"
            )
        return [to_pil(a) for a in arr]

    def _checked(self, frames: list[Image.Image], req: VideoRequest) -> list[Image.Image]:
        """Run the safety policy on the first, middle and last frames; a flag marks (or blocks) the clip."""
        picks = sorted({0, len(frames) // 2, len(frames) - 1})
        sample = [frames[i].copy() for i in picks]
        try:
            apply_policy(sample, [req.seed] * len(sample), self.safety, req.safety)
        except SafetyBlocked as e:
            raise SafetyBlocked(f"the video (seed {req.seed}) was {e}", delivered=[], withheld=[0]) from None
        frames[0].info[SPOILER_KEY] = any(im.info.get(SPOILER_KEY) for im in sample)
        return frames
