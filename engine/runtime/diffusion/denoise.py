"""One diffusers call: kwargs per mode, per-image CPU generators, step callback (progress, preview, cancel)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from engine.runtime.diffusion.errors import Cancelled
from engine.runtime.diffusion.guidance import control_kwargs
from engine.runtime.diffusion.preview import latent_preview
from engine.runtime.diffusion.request import GenerationRequest

Progress = Callable[[int, int, Image.Image | None], None]
ShouldCancel = Callable[[], bool]


def generators(seeds: list[int]) -> list[Any]:
    """One CPU torch.Generator per image (CPU so the same seed gives the same noise on any device)."""
    import torch

    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def step_callback(
    family: str,
    size: tuple[int, int],
    every: int,
    progress: Progress | None,
    should_cancel: ShouldCancel | None,
    fallback_total: int,
) -> Callable[..., dict]:
    """A callback_on_step_end reporting (step, total, preview every `every` steps) and raising Cancelled."""

    def cb(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled after step {step + 1}")
        if progress is not None:
            total = int(getattr(pipe, "num_timesteps", 0) or fallback_total)
            n = step + 1
            preview = latent_preview(kwargs.get("latents"), family, size) if n % every == 0 else None
            progress(n, total, preview)
        return kwargs

    return cb


def pipeline_kwargs(
    req: GenerationRequest, seeds: list[int], callback: Callable[..., dict]
) -> dict[str, Any]:
    """The keyword arguments for the txt2img / img2img / inpaint pipeline call."""
    kw: dict[str, Any] = {
        "prompt": req.prompt,
        "num_inference_steps": req.steps,
        "guidance_scale": req.cfg,
        "num_images_per_prompt": len(seeds),
        "generator": generators(seeds),
        "output_type": "np",
        "callback_on_step_end": callback,
    }
    if req.family != "flux" and req.negative:
        kw["negative_prompt"] = req.negative
    size = (req.width, req.height)
    if req.mode != "img2img":
        kw["width"], kw["height"] = size
    if req.init_image is not None:
        kw["image"] = req.init_image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        kw["strength"] = req.strength
    if req.mask_image is not None:
        kw["mask_image"] = req.mask_image.convert("L").resize(size, Image.Resampling.LANCZOS)
    if req.controls:
        kw.update(control_kwargs(req.mode, req.controls, size))
    if req.reference is not None:
        kw["ip_adapter_image"] = req.reference.image.convert("RGB")
    return kw


def to_pil(arr: np.ndarray) -> Image.Image:
    """A float (H, W, 3) array in 0..1 to an RGB image."""
    return Image.fromarray((np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8), "RGB")


def composite_inpaint(result: Image.Image, req: GenerationRequest, feather: float = 2.0) -> Image.Image:
    """Paste the source back outside the (feathered) mask so unmasked pixels stay exactly as they were."""
    from PIL import ImageFilter

    size = (req.width, req.height)
    source = req.init_image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    mask = req.mask_image.convert("L").resize(size, Image.Resampling.LANCZOS)
    if feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(feather))
    return Image.composite(result, source, mask)
