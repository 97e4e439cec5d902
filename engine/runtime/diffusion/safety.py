"""Post-decode checks run for every family: the NSFW checker (pluggable) and the blank/NaN detector."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from engine.runtime.diffusion.errors import BlankImage, SafetyBlocked
from engine.runtime.diffusion.resolve import resolve_model, weights_bytes

log = logging.getLogger("atelier.engine")
DEFAULT_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"
SPOILER_KEY = "atelier_spoiler"
SEED_KEY = "atelier_seed"


@runtime_checkable
class SafetyChecker(Protocol):
    """Anything that can say, per image, whether it is NSFW."""

    def load(self, device: str) -> None: ...

    def unload(self) -> None: ...

    def estimate_bytes(self) -> int: ...

    def check(self, images: list[Image.Image]) -> list[bool]: ...


class ClipSafetyChecker:
    """diffusers' StableDiffusionSafetyChecker + its CLIP feature extractor, from a local path or hub id."""

    def __init__(self, ref: str = DEFAULT_SAFETY_CHECKER, models_dir: Path | None = None) -> None:
        self.ref = ref
        self.models_dir = models_dir
        self._model = None
        self._processor = None
        self._device = "cpu"

    def _path(self, download: bool) -> Path:
        return resolve_model(
            self.ref,
            "safety checker",
            self.models_dir,
            download=download,
            patterns=["*.json", "*.safetensors"],
        )

    def estimate_bytes(self) -> int:
        """Weights on disk, or about 1.2 GB for the CompVis checker not yet downloaded."""
        try:
            return weights_bytes(self._path(download=False))
        except Exception:  # noqa: BLE001 - not downloaded yet
            return 1_200_000_000

    def load(self, device: str) -> None:
        """Load onto `device` (idempotent)."""
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        if self._model is not None and self._device == device:
            return
        path = self._path(download=True)
        self._processor = CLIPImageProcessor.from_pretrained(path)
        self._model = StableDiffusionSafetyChecker.from_pretrained(path).to(device).eval()
        self._device = device

    def unload(self) -> None:
        """Drop the model."""
        self._model = None
        self._processor = None
        gc.collect()

    def check(self, images: list[Image.Image]) -> list[bool]:
        """True for each image the checker flags."""
        import torch

        if self._model is None:
            self.load(self._device)
        pixels = self._processor(
            images=[im.convert("RGB") for im in images], return_tensors="pt"
        ).pixel_values
        dummy = [np.zeros((1, 1, 3), dtype=np.float32) for _ in images]
        with torch.no_grad():
            _, flags = self._model(clip_input=pixels.to(self._device, self._model.dtype), images=dummy)
        return [bool(f) for f in flags]


def blank_reason(arr: np.ndarray) -> str | None:
    """Why a decoded float image (H, W, C in 0..1) is unusable, or None when it is fine."""
    if not np.isfinite(arr).all():
        return "contains NaN/inf values (often fp16 overflow in the VAE)"
    if float(arr.max() - arr.min()) < 1.0 / 255.0:
        return "is a single flat colour"
    return None


def check_blank(arrays: list[np.ndarray], seeds: list[int]) -> None:
    """Raise BlankImage when any decoded image is flat or non-finite (nothing from it is delivered)."""
    bad = [(i, r) for i, a in enumerate(arrays) if (r := blank_reason(a)) is not None]
    if bad:
        what = "; ".join(f"image {i + 1} (seed {seeds[i]}) {r}" for i, r in bad)
        raise BlankImage(
            f"generation produced an unusable image: {what}", delivered=[], withheld=[i for i, _ in bad]
        )


def apply_policy(
    images: list[Image.Image], seeds: list[int], checker: SafetyChecker | None, policy: str
) -> list[Image.Image]:
    """Run the checker and apply the policy: "block" raises SafetyBlocked, "spoiler" flags, "off" skips.

    Flagged images get `image.info["atelier_spoiler"] = True` under "spoiler"; every image carries its seed.
    """
    for im, seed in zip(images, seeds, strict=True):
        im.info[SEED_KEY] = seed
        im.info[SPOILER_KEY] = False
    if policy == "off":
        return images
    if checker is None:
        raise SafetyBlocked(
            f"safety policy is '{policy}' but no safety checker is configured", delivered=[], withheld=[]
        )
    flags = checker.check(images)
    flagged = [i for i, f in enumerate(flags) if f]
    if not flagged:
        return images
    log.info("safety checker flagged %d of %d images (policy %s)", len(flagged), len(images), policy)
    if policy == "spoiler":
        for i in flagged:
            images[i].info[SPOILER_KEY] = True
        return images
    which = ", ".join(f"image {i + 1} (seed {seeds[i]})" for i in flagged)
    kept = [im for i, im in enumerate(images) if i not in flagged]
    raise SafetyBlocked(
        f"withheld by the safety checker (policy: block): {which}", delivered=kept, withheld=flagged
    )


def is_spoiler(image: Image.Image) -> bool:
    """True when the safety policy marked `image` to be sent as a spoiler."""
    return bool(image.info.get(SPOILER_KEY, False))
