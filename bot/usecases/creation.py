"""Draft → Enhance: the 'generate' payload that re-renders one draft image at full quality (front-neutral)."""

from __future__ import annotations

import math

from bot.usecases.errors import UserError
from bot.usecases.library import preset_of
from engine.core import Engine
from engine.jobs.result import JobResult
from engine.store.jobs import Job


def is_draft(out: JobResult | None) -> bool:
    """True for a finished draft (its params say so)."""
    return out is not None and bool(out.params.get("draft"))


def scaled(size: tuple[int, int], area: int) -> tuple[int, int]:
    """(w, h) scaled up or down to `area` pixels, keeping the aspect; both sides multiples of 8 (at least 64)."""
    w, h = size
    k = math.sqrt(area / (w * h))
    return max(64, int(w * k) // 8 * 8), max(64, int(h * k) // 8 * 8)


def enhance_preset(engine: Engine) -> str:
    """generation.enhance_preset, else the default image preset."""
    return engine.settings.generation.enhance_preset or engine.default_image_preset


async def enhance_payload(engine: Engine, job: Job, index: int, user_id: int, guild_id: int) -> dict:
    """Image `index` (0-based) of draft `job` again with the full preset: same prompt, seed and composition
    (img2img from the draft at generation.enhance_strength), at the full preset's size."""
    out = JobResult.of(job)
    if out is None:
        raise UserError(f"job #{job.id} has no finished images to enhance")
    if not is_draft(out):
        raise UserError(f"job #{job.id} is not a draft; Enhance works on /imagine draft results")
    if not 0 <= index < len(out.images):
        raise UserError(f"job #{job.id} has {len(out.images)} image(s); there is no image {index + 1}")
    preset = await preset_of(engine, enhance_preset(engine), user_id, guild_id)
    p = out.params
    w, h = scaled((int(p.get("width") or 512), int(p.get("height") or 512)), preset["width"] * preset["height"])
    return {
        "prompt": str(p.get("user_prompt") or out.prompt),
        "style": out.style,  # "" keeps a saved style from being applied on top
        "negative": out.negative or None,
        "preset": preset["name"],
        "seed": out.seeds[index],
        "count": 1,
        "source_generation_id": out.generation_id,
        "source_index": index,
        "strength": engine.settings.generation.enhance_strength,
        "width": w,
        "height": h,
        "draft": False,
    }
