"""The /animate case of bench.creation: an 'animate' job (tiny AnimateDiff -> MP4 + GIF + history) vs the raw
AnimateDiffPipeline call on the same tiny model, settings and seed. Both give the first frame (Atelier's decoded
from its H.264 file, so pixels differ by the lossy encoding)."""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from engine.core import Engine

VIDEO = {"model": "demo:tiny-sd", "motion_adapter": "demo:tiny-motion-adapter", "family": "animatediff",
         "scheduler": "default", "steps": 8, "cfg": 5.0}  # fmt: skip
FRAMES, FPS = 8, 8
PROMPT = "waves breaking on a lighthouse at dusk"


class Bench(Protocol):
    """What the case needs of bench.creation.Bench."""

    svc: Engine
    size: int
    device: str
    raw: dict[str, Any]


async def prepare_video(b: Bench) -> None:
    """The bench-video preset in the store and the raw AnimateDiffPipeline from the same folders."""
    import diffusers

    from engine.runtime.diffusion.dtypes import dtype_kwargs, pick_dtype
    from engine.runtime.diffusion.video import animatediff_scheduler

    await b.svc.store.presets.save("image", "bench-video", {**VIDEO, "width": b.size, "height": b.size})
    sd = await b.svc.models.demo.resolve(str(VIDEO["model"]), "bench")
    adapter_path = await b.svc.models.demo.resolve(str(VIDEO["motion_adapter"]), "bench")
    kw = dtype_kwargs(pick_dtype(b.svc.settings.gpu.dtype, b.device, "animatediff"))
    adapter = diffusers.MotionAdapter.from_pretrained(adapter_path, **kw)
    pipe = diffusers.AnimateDiffPipeline.from_pretrained(sd, motion_adapter=adapter, **kw).to(b.device)
    pipe.scheduler = animatediff_scheduler(pipe.scheduler.config, "default")
    pipe.set_progress_bar_config(disable=True)
    b.raw["animate"] = pipe


async def animate_atelier(b: Bench, seed: int) -> str:
    """One 'animate' job through the whole stack; the path of its MP4."""
    payload = {"prompt": PROMPT, "preset": "bench-video", "frames": FRAMES, "fps": FPS, "seed": seed}
    job = await b.svc.wait(await b.svc.submit("animate", payload, user_id=1, guild_id=1), 600)
    if job.state != "done" or job.result is None:
        raise RuntimeError(f"bench job {job.id} {job.state}: {job.error}")
    return str(job.result["images"][0])


def animate_raw(b: Bench, seed: int) -> Image.Image:
    """The raw pipeline call; its first frame."""
    import torch

    from engine.runtime.diffusion.denoise import to_pil

    out = b.raw["animate"](
        prompt=PROMPT, num_frames=FRAMES, width=b.size, height=b.size, num_inference_steps=VIDEO["steps"],
        guidance_scale=VIDEO["cfg"], generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )  # fmt: skip
    return to_pil(out.frames[0][0])
