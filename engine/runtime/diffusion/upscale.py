"""Upscaling 2x/4x: a tiled img2img "hires" pass (Lanczos resize, overlapping tiles, feathered seams),
or a dedicated upscaler pipeline (generation.upscaler) via UpscalerModel."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from engine.config import Settings
from engine.runtime.diffusion.denoise import Progress, ShouldCancel, generators
from engine.runtime.diffusion.errors import Cancelled, GenerationFailed, InvalidRequest, ModelNotAvailable
from engine.runtime.diffusion.request import BASE_SIDE, GenerationRequest
from engine.runtime.diffusion.resolve import resolve_model, weights_bytes
from engine.runtime.diffusion.safety import apply_policy, check_blank


class DiffusionModel(Protocol):
    """What the upscalers need of engine.runtime.diffusion.pipeline.DiffusionModel (no import back: no cycle)."""

    settings: Settings
    family: str
    safety: Any

    def request(self, aspect: str | None = None, **fields: Any) -> GenerationRequest: ...

    def denoise(self, req: GenerationRequest, progress: Progress | None, should_cancel: ShouldCancel | None) -> Any: ...

FACTORS = (2, 4)


def check_factor(image: Image.Image, factor: int, max_side: int) -> tuple[int, int]:
    """The target size, or InvalidRequest for a bad factor or a result larger than `max_side`."""
    if factor not in FACTORS:
        raise InvalidRequest(f"upscale factor must be one of {FACTORS}; got {factor}")
    w, h = image.width * factor, image.height * factor
    if max(w, h) > max_side:
        raise InvalidRequest(f"upscaled size {w}x{h} would exceed the maximum side of {max_side} px")
    return w, h


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets (multiples of 8) of overlapping tiles covering `length`; the last tile ends at `length`."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (n - 1)
    starts = [min(length - tile, round(i * step / 8) * 8) for i in range(n)]
    starts[-1] = length - tile
    return sorted(set(starts))


def feather(w: int, h: int, overlap: int, edges: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """A (h, w, 1) weight: 1 inside, ramping down over `overlap` px on interior edges (left, top, right, bottom)."""

    def ramp(n: int, lo: bool, hi: bool) -> np.ndarray:
        r = np.ones(n, dtype=np.float32)
        k = min(overlap, n // 2)
        if k > 0:
            up = (np.arange(k, dtype=np.float32) + 1.0) / (k + 1.0)
            if lo:
                r[:k] = np.minimum(r[:k], up)
            if hi:
                r[n - k :] = np.minimum(r[n - k :], up[::-1])
        return r

    left, top, right, bottom = edges
    return (ramp(h, top, bottom)[:, None] * ramp(w, left, right)[None, :])[..., None]


def _pad8(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    return np.pad(arr, ((0, -h % 8), (0, -w % 8), (0, 0)), mode="edge")


def tiled_upscale(
    model: DiffusionModel,
    image: Image.Image,
    factor: int,
    prompt: str,
    seed: int,
    *,
    negative: str = "",
    strength: float = 0.3,
    steps: int | None = None,
    cfg: float | None = None,
    scheduler: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    safety: str | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> Image.Image:
    """Lanczos-resize by `factor`, then img2img each overlapping tile at low `strength` and blend the seams.

    Tiles default to the family's base side (512 SD1.5, 1024 SDXL/FLUX); every tile uses `seed`.
    progress(tile_index, n_tiles, None) is called after each tile.
    """
    w, h = check_factor(image, factor, model.settings.generation.max_side)
    big = np.asarray(image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    canvas = _pad8(big)
    ch, cw = canvas.shape[:2]
    side = tile or BASE_SIDE[model.family]
    tw, th = min(cw, side // 8 * 8), min(ch, side // 8 * 8)
    ov = overlap if overlap is not None else max(8, side // 8)
    acc = np.zeros_like(canvas)
    wsum = np.zeros(canvas.shape[:2] + (1,), dtype=np.float32)
    boxes = [(x, y) for y in tile_starts(ch, th, ov) for x in tile_starts(cw, tw, ov)]
    for i, (x, y) in enumerate(boxes):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"upscale cancelled after {i} of {len(boxes)} tiles")
        crop = Image.fromarray((canvas[y : y + th, x : x + tw] * 255).round().astype(np.uint8), "RGB")
        req = model.request(
            prompt=prompt, negative=negative, width=tw, height=th, seed=seed, strength=strength,
            init_image=crop, steps=steps, cfg=cfg, scheduler=scheduler, batch=1, loras=[],
        )  # fmt: skip
        out = model.denoise(req, None, should_cancel)[0]
        edges = (x > 0, y > 0, x + tw < cw, y + th < ch)
        wgt = feather(tw, th, ov, edges)
        acc[y : y + th, x : x + tw] += out * wgt
        wsum[y : y + th, x : x + tw] += wgt
        if progress is not None:
            progress(i + 1, len(boxes), None)
    result = (acc / np.maximum(wsum, 1e-8))[:h, :w]
    check_blank([result], [seed])
    img = Image.fromarray((np.clip(result, 0, 1) * 255).round().astype(np.uint8), "RGB")
    return apply_policy([img], [seed], model.safety, safety or model.settings.generation.safety)[0]


def model_upscale(
    model: DiffusionModel, upscaler: UpscalerModel, image: Image.Image, factor: int, prompt: str, seed: int,
    *, steps: int | None = None, safety: str | None = None, should_cancel: ShouldCancel | None = None,
    **_unused_tiling: Any,
) -> Image.Image:  # fmt: skip
    """Upscale with a dedicated (loaded) upscaler model, then run the blank check and the safety policy."""
    check_factor(image, factor, model.settings.generation.max_side)
    if not upscaler.loaded:
        raise GenerationFailed(f"upscaler {upscaler.name} is not loaded; the arbiter must load it first")
    if should_cancel is not None and should_cancel():
        raise Cancelled("upscale cancelled before it started")
    out = upscaler.upscale(image, factor, prompt, seed, steps=steps or 20)
    check_blank([np.asarray(out, dtype=np.float32) / 255.0], [seed])
    return apply_policy([out], [seed], model.safety, safety or model.settings.generation.safety)[0]


class UpscalerModel:
    """A dedicated upscaler (StableDiffusionUpscalePipeline x4 or the latent x2 upscaler) as a Managed model."""

    kind = "diffusion"

    def __init__(self, ref: str, models_dir: Path | None = None, name: str = "upscaler") -> None:
        self.ref, self.models_dir, self.name = ref, models_dir, name
        self._pipe: Any = None

    def estimate_bytes(self) -> int:
        """Weights at fp16 + 25%, or 2 GB when not downloaded yet."""
        try:
            return int(
                weights_bytes(resolve_model(self.ref, self.name, self.models_dir, download=False), 2) * 1.25
            )
        except ModelNotAvailable:
            return 2_000_000_000

    @property
    def loaded(self) -> bool:
        """True while the pipeline is loaded."""
        return self._pipe is not None

    def load(self, device: str) -> None:
        """Load the upscaler pipeline onto `device`."""
        import diffusers
        import torch

        from engine.runtime.diffusion.dtypes import dtype_kwargs

        if self._pipe is None:
            path = resolve_model(self.ref, self.name, self.models_dir)
            dtype = torch.float32 if device == "cpu" else torch.float16
            pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), **dtype_kwargs(dtype))
            self._pipe = pipe.to(device)
            self._pipe.set_progress_bar_config(disable=True)

    def unload(self) -> None:
        """Drop the pipeline and free cached memory."""
        import torch

        self._pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Final release."""
        self.unload()

    @property
    def native_factor(self) -> int:
        """4 for StableDiffusionUpscalePipeline, 2 for the latent upscaler."""
        return 2 if "Latent" in type(self._pipe).__name__ else 4

    def upscale(
        self, image: Image.Image, factor: int, prompt: str, seed: int, steps: int = 20
    ) -> Image.Image:
        """Upscale by `factor`, running the native factor as often as needed and Lanczos-resizing to the exact size."""
        if factor not in FACTORS:
            raise InvalidRequest(f"upscale factor must be one of {FACTORS}; got {factor}")
        target = (image.width * factor, image.height * factor)
        out, reached = image.convert("RGB"), 1
        while reached < factor:
            req_gen = generators([seed])
            out = self._pipe(
                prompt=prompt, image=out, num_inference_steps=steps, generator=req_gen[0]
            ).images[0]
            reached *= self.native_factor
        return out if out.size == target else out.resize(target, Image.Resampling.LANCZOS)


__all__ = [
    "GenerationRequest",
    "UpscalerModel",
    "check_factor",
    "feather",
    "model_upscale",
    "tile_starts",
    "tiled_upscale",
]
