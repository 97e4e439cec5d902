"""The generate tool: check the request, then enqueue one 'generate' job (the job runner draws it)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Annotated, Any, Literal

from pydantic import Field

from engine.diffusion.request import ASPECTS
from engine.images import decode_image, image_limits
from engine.store.history import Generation
from tools.common import usable_generation
from tools.context import Attachment, ToolContext, ToolError
from tools.registry import Choices

Aspect = Literal[tuple(ASPECTS)]  # type: ignore[valid-type]
MAX_SEED = 2**32 - 1
INHERITED_PARAMS = ("steps", "cfg", "scheduler")


def _save_attachment(ctx: ToolContext, att: Attachment) -> str:
    """Decode an uploaded image safely and store it as PNG under outputs/uploads; return the path."""
    img = decode_image(att.data, **image_limits(ctx.settings.images))
    digest = hashlib.sha256(att.data).hexdigest()[:24]
    folder = ctx.settings.path("outputs") / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.png"
    if not path.exists():
        img.save(path, format="PNG")
    return str(path)


async def _check_names(ctx: ToolContext, preset: str | None, style: str | None) -> None:
    """UnknownEntry (with close names) for a preset or style that does not exist for this user/guild."""
    if preset:
        await ctx.store.presets.resolve("image", preset, ctx.user_id, ctx.guild_id)
    if style:
        await ctx.store.library.get(style, "style", ctx.guild_id)


def _inherit(payload: dict[str, Any], src: Generation) -> None:
    """Fill unset fields from the source generation (same seed and parameters unless overridden)."""
    if payload["seed"] is None:
        payload["seed"] = src.seed
    payload["preset"] = payload["preset"] or src.preset or None
    payload["style"] = payload["style"] or src.style or None
    payload["negative"] = payload["negative"] or src.negative or None
    if payload["aspect"] is None and src.params.get("aspect") in ASPECTS:
        payload["aspect"] = src.params["aspect"]
    for key in INHERITED_PARAMS:
        if src.params.get(key) is not None:
            payload[key] = src.params[key]


async def generate(
    ctx: ToolContext,
    prompt: Annotated[str, Field(min_length=1, max_length=1000)],
    negative: Annotated[str, Field(max_length=500)] = "",
    preset: Annotated[str, Choices("preset")] | None = None,
    style: Annotated[str, Choices("style")] | None = None,
    aspect: Aspect | None = None,
    count: Annotated[int, Field(ge=1, le=4)] = 1,
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None,
    strength: Annotated[float, Field(ge=0.05, le=1.0)] | None = None,
    source_generation_id: Annotated[int, Field(ge=1)] | None = None,
) -> dict:
    """Queue an image generation (text-to-image, or img2img from an earlier image).

    Args:
        prompt: What to draw: subject, style, lighting, colours.
        negative: What to avoid in the image.
        preset: Image preset (model and default settings); omit for the default.
        style: A library style to apply to the prompt.
        aspect: Aspect ratio such as 1:1, 16:9 or 9:16.
        count: Number of images, 1 to 4.
        seed: Seed to reproduce or vary an image; omit for a random one.
        strength: img2img strength 0.05-1 (low keeps more of the source image); needs a source image.
        source_generation_id: Id of an earlier generation to reuse: its seed and settings (with strength: img2img of its image).
    """
    if not prompt.strip():
        raise ToolError("the prompt is empty")
    max_batch = ctx.settings.generation.max_batch
    if count > max_batch:
        raise ToolError(f"count {count} is over this server's limit of {max_batch} images")
    payload: dict[str, Any] = {
        "prompt": prompt.strip(),
        "negative": negative.strip() or None,
        "preset": preset,
        "style": style,
        "aspect": aspect,
        "count": count,
        "seed": seed,
        "strength": strength,
        "source_generation_id": None,
    }
    if source_generation_id is None and strength is not None and ctx.replied_generation_id:
        source_generation_id = ctx.replied_generation_id
    if source_generation_id is not None:
        _inherit(payload, await usable_generation(ctx, source_generation_id))
        if (
            strength is not None
        ):  # img2img from the source's image; without strength: same seed/params, txt2img
            payload["source_generation_id"] = source_generation_id
    elif strength is not None:
        images = [a for a in ctx.attachments if a.data]
        if not images:
            raise ToolError(
                "strength needs a source image: reply to a generation, attach an image or give source_generation_id"
            )
        payload["source_image"] = await asyncio.to_thread(_save_attachment, ctx, images[0])
    await _check_names(ctx, payload["preset"], payload["style"])
    if payload["seed"] is None:
        payload["seed"] = random.randint(0, MAX_SEED)
    jobs = ctx.services.jobs
    job_id = await jobs.enqueue(
        ctx.user_id, ctx.guild_id, ctx.channel_id, "generate", payload, reply_to=dict(ctx.reply_to)
    )
    return {
        "job_ids": [job_id],
        "queue_position": await jobs.position(job_id),
        "prompt": payload["prompt"],
        "seed": payload["seed"],
        "preset": payload["preset"],
        "style": payload["style"],
        "count": count,
        "mode": "img2img" if strength is not None else "txt2img",
        "based_on": source_generation_id,
    }
