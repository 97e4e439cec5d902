"""Before a 'generate' job is queued: its GPU-time estimate against the per-user caps, and VRAM-aware limits.

- cost: GPU-seconds ≈ rate × steps × megapixels × images, the rate measured per preset and device (the store's
  preset_rates, updated after each job), cost.default_rate before the first; the per-request cap is checked here,
  the user's queued cap by the store in the same transaction that queues the job (racing submissions included);
- VRAM: the memory left for activations (the arbiter's budget minus the preset's measured weights) over the
  per-pixel activation memory of its family gives the largest batch and image that fit; a request beyond them
  is refused with the reason before it can run out of memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from engine.config import Settings
from engine.jobs.creation import check_family, choose
from engine.jobs.defaults import pick, saved_defaults
from engine.jobs.payloads import GeneratePayload
from engine.jobs.payloads_video import AnimatePayload
from engine.jobs.policy import Requester
from engine.jobs.style_codes import shared_preset
from engine.jobs.video_plan import admit, video_preset_name
from engine.runtime.arbiter import Arbiter
from engine.runtime.control.models import reference_adapter
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.request import aspect_size
from engine.store import Store
from engine.store.cache import Estimate
from engine.store.library import Saved, UnknownEntry

MIB = 2**20
# activation memory per output pixel per image while denoising and decoding (fp16, SDPA), by family
ACT_BYTES_PER_PIXEL = {"sd15": 4 * 1024, "sdxl": 3 * 1024, "flux": 6 * 1024}
WEIGHTS_OF_PEAK = 0.7  # share of a preset's vram_mb (peak at its default size) that is weights


@dataclass(frozen=True)
class Shape:
    """What a request will render: preset, steps, size and images."""

    preset: str
    family: str
    steps: int
    width: int
    height: int
    batch: int

    @property
    def work(self) -> float:
        """Steps × megapixels × images."""
        return self.steps * self.width * self.height / 1e6 * self.batch


@dataclass(frozen=True)
class VramLimits:
    """The largest batch at a size, and the largest square side for one image, that fit on the device."""

    preset: str
    free_bytes: int
    weights_bytes: int
    max_batch: int
    max_side: int

    def text(self) -> str:
        """One line for /settings and `atelier doctor`."""
        return (
            f"{self.preset}: up to {self.max_batch} image(s) at its default size, one image up to "
            f"{self.max_side}×{self.max_side} ({self.weights_bytes / MIB:.0f} MiB weights, "
            f"{self.free_bytes / MIB:.0f} MiB left for drawing)"
        )


def weights_bytes(arbiter: Arbiter, preset: dict[str, Any]) -> int:
    """The preset's weights: measured by the arbiter once loaded, else estimated, else from vram_mb."""
    for s in arbiter.snapshot():
        if s["name"] == preset["name"] or str(s["name"]).startswith(f"{preset['name']}@"):
            return int(s["planned_bytes"])
    return int((preset.get("vram_mb") or 0) * MIB * WEIGHTS_OF_PEAK)


def device_free(arbiter: Arbiter) -> int | None:
    """Bytes free on the arbiter's CUDA device right now (other processes count), None elsewhere."""
    if not arbiter.device.startswith("cuda"):
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(arbiter.device))
    return int(free)


def _loaded(arbiter: Arbiter, name: str) -> bool:
    return any(s["name"] == name and s["state"] == "loaded" for s in arbiter.snapshot())


def vram_limits(arbiter: Arbiter, settings: Settings, preset: dict[str, Any], pixels: int) -> VramLimits:
    """The largest batch of `pixels`-pixel images and the largest one-image side for a preset."""
    weights = weights_bytes(arbiter, preset)
    free = max(0, arbiter.budget - weights)
    on_device = device_free(arbiter)
    if on_device is not None:  # the device's own free memory, less the weights when they still have to load
        free = min(free, max(0, on_device - (0 if _loaded(arbiter, str(preset["name"])) else weights)))
    per_px = ACT_BYTES_PER_PIXEL.get(str(preset.get("family")), ACT_BYTES_PER_PIXEL["sdxl"])
    per_px = per_px * settings.cost.vram_headroom
    gen = settings.generation
    batch = min(gen.max_batch, int(free // (per_px * max(1, pixels))))
    side = int(math.sqrt(free / per_px)) // 8 * 8
    return VramLimits(str(preset["name"]), free, weights, batch, min(side, gen.max_side))


@dataclass(eq=False)
class Admission:
    """The submitter's GPU-time and memory checks for 'generate' jobs."""

    store: Store
    settings: Settings
    arbiter: Arbiter
    default_preset: str

    async def _preset(self, name: str, who: Requester, shared: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return shared or await self.store.presets.resolve("image", name, who.user_id, who.guild_id)
        except UnknownEntry as e:
            raise InvalidRequest(str(e)) from None

    async def shape(
        self, who: Requester, p: GeneratePayload, stored: Saved, read: dict[str, dict] | None = None
    ) -> tuple[Shape, dict[str, Any]]:
        """The preset, steps, size and batch the handler will resolve for this request (`read`: presets this
        submission already read, by name; the one read here is added)."""
        saved = saved_defaults(stored)
        choice = choose(p, saved, self.settings.generation, self.default_preset)  # an edit, a draft or usual
        saved = choice.saved(saved)
        known = shared_preset(p, choice.preset) or (read or {}).get(choice.preset)
        preset = await self._preset(choice.preset, who, known)
        if known is None and read is not None:
            read[choice.preset] = preset
        check_family(choice, str(preset.get("family")), choice.preset)
        family = str(preset.get("family", "sdxl"))
        aspect = p.aspect if p.aspect is not None else (None if p.width or p.height else saved.get("aspect"))
        w, h = int(preset.get("width") or 1024), int(preset.get("height") or 1024)
        if aspect is not None:
            w, h = aspect_size(str(aspect), family)
        w, h = p.width or w, p.height or h
        steps = int(pick(p.steps, saved, "steps", preset.get("steps") or 30))  # type: ignore[arg-type]
        batch = int(pick(p.best_of or p.count, saved, "count", 1))  # type: ignore[arg-type]
        return Shape(str(preset["name"]), family, steps, w, h, batch), preset

    async def rate(self, preset: str) -> float:
        """GPU-seconds per step-megapixel-image of a preset on this device (measured, else the default)."""
        found = await self.store.costs.rate(preset, self.arbiter.device)
        return found[0] if found else self.settings.cost.default_rate

    async def check(
        self, who: Requester, kind: str, typed: BaseModel, stored: Saved, read: dict[str, dict] | None = None
    ) -> Estimate | None:
        """A 'generate' job's estimate (the store checks its queued cap as it enqueues); InvalidRequest when over
        the per-request cap or the memory. `stored`: the requester's settings; `read`: presets already read (the
        ones read here are added)."""
        if kind == "animate" and isinstance(typed, AnimatePayload):  # a video preset that can render it
            name = video_preset_name(typed, self.settings.video)
            admit(name, await self._preset(name, who, (read or {}).get(name)), typed)
            return None
        if kind != "generate" or not isinstance(typed, GeneratePayload):
            return None
        shape, preset = await self.shape(who, typed, stored, read)
        if typed.reference_image is not None or typed.reference_generation_id is not None:
            reference_adapter(preset, self.settings.control)  # a preset that takes no reference images: now
        limits = vram_limits(self.arbiter, self.settings, preset, shape.width * shape.height)
        size = f"{shape.width}×{shape.height}"
        if limits.max_batch < shape.batch:
            fits = f"at most {limits.max_batch} image(s) at {size}" if limits.max_batch else "not even one image"
            raise InvalidRequest(
                f"{shape.batch} image(s) at {size} do not fit in this device's memory with preset "
                f"'{shape.preset}' ({fits}; one image fits up to {limits.max_side}×{limits.max_side}): "
                "ask for fewer images or a smaller size"
            )
        cost = self.settings.cost
        gpu_s = round(await self.rate(shape.preset) * shape.work, 2)
        if gpu_s > cost.max_job_gpu_s:
            raise InvalidRequest(
                f"this request would take about {gpu_s:.0f} GPU-seconds ({shape.steps} steps × {size} × "
                f"{shape.batch} image(s) on '{shape.preset}'), over the limit of {cost.max_job_gpu_s:.0f} per "
                "request: ask for fewer steps, images or pixels"
            )
        return Estimate(gpu_s, cost.max_queued_gpu_s)


def observed_rate(steps: int, pixels: int, batch: int, elapsed_s: float) -> float:
    """A finished render's measured GPU-seconds per step-megapixel-image (folded into its preset's rate)."""
    return elapsed_s / max(steps * pixels / 1e6 * max(1, batch), 1e-9)


async def eta(store: Store, job_id: int, concurrency: int = 1) -> tuple[float | None, float]:
    """(this job's estimated GPU-seconds, the estimated seconds of the queued and running jobs ahead of it)."""
    own = await store.costs.estimate_of(job_id)
    ahead = await store.costs.pending(before_job=job_id)
    return own, ahead / max(1, concurrency)
