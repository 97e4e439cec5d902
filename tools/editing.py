"""The generate tool's instruction-edit path: an edit model follows the prompt on the user's image(s), or img2img.

Sources, in order: an explicit source_generation_id, else the first attached image, else the replied image. A
family that takes several images (qwen-edit-plus, klein) also gets the other attached images after it, and a
reply to a result with attached images ("put this logo on the mug") edits the result with them.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from engine.images import BadImage
from engine.runtime.diffusion.edit import check_image_count, max_edit_images
from engine.runtime.diffusion.errors import InvalidRequest
from tools.context import Attachment, ToolContext, ToolError
from tools.sources import Sources, image_attachments, save_upload

FALLBACK_STRENGTH = 0.6  # img2img when no edit model is configured: keeps the composition
FALLBACK_NOTE = (
    "No edit model is configured here (generation.edit_preset), so this redraws the image with img2img "
    "from it and your words instead of editing it."
)


def edit_available(ctx: ToolContext) -> bool:
    """True when an edit preset is configured (generation.edit_preset)."""
    return bool(ctx.settings.generation.edit_preset)


async def _family(ctx: ToolContext, preset: str) -> str:
    """The family of the edit preset as this user sees it (UnknownEntry when there is none)."""
    found = await ctx.store.presets.resolve("image", preset, ctx.user_id, ctx.guild_id)
    return str(found.get("family", ""))


def _first_id(ctx: ToolContext, explicit: int | None, family: str, attached: list[Attachment]) -> int | None:
    """The generation to edit first: the explicit one, or (multi-image family + attachments) the replied one."""
    if explicit is not None or not attached or max_edit_images(family) == 1:
        return explicit
    return ctx.replied_generation_id


def _count(first_id: int | None, family: str, attached: list[Attachment]) -> int:
    """How many source images the edit gets (a single-image family only ever takes its first source)."""
    if first_id is not None:
        return 1 + (len(attached) if max_edit_images(family) > 1 else 0)
    return max(1, len(attached))


async def _save(ctx: ToolContext, att: Attachment) -> str:
    """Decode and store one more attached image (off the event loop); ToolError naming a bad file."""
    try:
        return await asyncio.to_thread(save_upload, ctx.settings, att.data)
    except BadImage as e:
        raise ToolError(f"attached file {att.name[:64]} is not a usable image: {e}") from None


async def edit_fields(
    ctx: ToolContext, payload: dict[str, Any], sources: Sources, source_generation_id: int | None
) -> dict[str, Any]:
    """Turn `payload` into an edit of the explicit / attached / replied image(s); the result's extra fields."""
    payload["preset"] = payload["preset"] or ctx.settings.generation.edit_preset
    family = await _family(ctx, payload["preset"])
    attached = image_attachments(ctx)
    first_id = _first_id(ctx, source_generation_id, family, attached)
    try:
        check_image_count(family, _count(first_id, family, attached))
    except InvalidRequest as e:
        raise ToolError(str(e)) from None
    try:
        src = await sources.resolve(first_id, "edit")
    except ToolError:
        raise ToolError(
            "an edit needs an image: reply to a generation or attach one, then say what to change"
        ) from None
    if first_id is not None and first_id != source_generation_id:  # the replied result, with attached images
        src = replace(src, label=f"the replied image #{first_id}")
    others = (attached if first_id is not None else attached[1:]) if max_edit_images(family) > 1 else []
    payload.update(src.fields("source_generation_id", "source_image"))
    payload |= {"edit": True, "strength": None, "aspect": None}
    if others:
        payload["edit_images"] = [await _save(ctx, att) for att in others]
    gen = src.generation
    if gen is not None and payload["seed"] is None:
        payload["seed"] = gen.seed
    shown: dict[str, Any] = {"instruction": payload["prompt"], "from": src.label}
    if others:
        shown["with"] = [f"attached image {att.name[:64]}" for att in others]
    return {"edit": shown, "based_on": gen.id if gen else None}
