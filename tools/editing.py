"""The generate tool's instruction-edit path: an edit model follows the prompt on the user's image, or img2img."""

from __future__ import annotations

from typing import Any

from tools.context import ToolContext, ToolError
from tools.sources import Sources, image_attachments

MAX_EDIT_IMAGES = 1  # multi-image edits (Qwen-Image-Edit-2509) are not wired to the tool yet

FALLBACK_STRENGTH = 0.6  # img2img when no edit model is configured: keeps the composition
FALLBACK_NOTE = (
    "No edit model is configured here (generation.edit_preset), so this redraws the image with img2img "
    "from it and your words instead of editing it."
)


def edit_available(ctx: ToolContext) -> bool:
    """True when an edit preset is configured (generation.edit_preset)."""
    return bool(ctx.settings.generation.edit_preset)


async def edit_fields(
    ctx: ToolContext, payload: dict[str, Any], sources: Sources, source_generation_id: int | None
) -> dict[str, Any]:
    """Turn `payload` into an edit of the explicit / attached / replied image; the result's extra fields."""
    if source_generation_id is None and len(image_attachments(ctx)) > MAX_EDIT_IMAGES:
        raise ToolError(f"an edit takes {MAX_EDIT_IMAGES} image; attach only the one to change")
    try:
        src = await sources.resolve(source_generation_id, "edit")
    except ToolError:
        raise ToolError(
            "an edit needs an image: reply to a generation or attach one, then say what to change"
        ) from None
    payload.update(src.fields("source_generation_id", "source_image"))
    payload |= {"edit": True, "strength": None, "aspect": None}
    payload["preset"] = payload["preset"] or ctx.settings.generation.edit_preset
    gen = src.generation
    if gen is not None and payload["seed"] is None:
        payload["seed"] = gen.seed
    return {
        "edit": {"instruction": payload["prompt"], "from": src.label},
        "based_on": gen.id if gen else None,
    }
