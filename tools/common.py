"""Helpers shared by tools: generations the requester may use, image files and job results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.store.history import Generation, Scope
from tools.context import ToolContext, ToolError

PROMPT_PREVIEW_CHARS = 300


def own_scope(ctx: ToolContext) -> Scope:
    """The requester's own generations only."""
    return Scope(ctx.user_id, ctx.guild_id, include_guild=False)


async def usable_generation(ctx: ToolContext, gen_id: int) -> Generation:
    """A generation the requester owns, or the one they replied to (visible in their guild); else ToolError."""
    gen = await ctx.store.history.get(gen_id, own_scope(ctx))
    if gen is None and gen_id == ctx.replied_generation_id:
        gen = await ctx.store.history.get(gen_id, Scope(ctx.user_id, ctx.guild_id, include_guild=True))
    if gen is None:
        raise ToolError(f"there is no generation #{gen_id} that you can use")
    return gen


def summary(gen: Generation) -> dict[str, Any]:
    """What the model needs to reuse a generation: id, prompt, seed, preset, style, negative, thumbnail."""
    prompt = (
        gen.prompt if len(gen.prompt) <= PROMPT_PREVIEW_CHARS else gen.prompt[:PROMPT_PREVIEW_CHARS] + "..."
    )
    return {
        "id": gen.id,
        "prompt": prompt,
        "negative": gen.negative[:PROMPT_PREVIEW_CHARS],
        "seed": gen.seed,
        "preset": gen.preset,
        "style": gen.style,
        "thumbnail": gen.images[0] if gen.images else None,
        "created_at": gen.created_at,
    }


def image_file(ctx: ToolContext, stored: str) -> Path:
    """Resolve a stored image path (absolute, or relative to outputs/ or the data dir) to an existing file."""
    raw = Path(stored)
    settings = ctx.settings
    candidates = (
        [raw] if raw.is_absolute() else [settings.path("outputs") / raw, settings.path("data_dir") / raw]
    )
    for path in candidates:
        if path.is_file():
            return path
    raise ToolError(f"the image file of this generation is missing ({stored})")


