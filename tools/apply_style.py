"""The apply_style tool: merge a library style (and its negative) into a prompt."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.context import ToolContext, ToolError
from tools.registry import Choices


def merge_negatives(*parts: str) -> str:
    """Join negative prompts with commas, dropping blanks and repeated terms (first spelling wins)."""
    seen: dict[str, str] = {}
    for part in parts:
        for term in part.split(","):
            term = term.strip()
            if term and term.lower() not in seen:
                seen[term.lower()] = term
    return ", ".join(seen.values())


async def apply_style(
    ctx: ToolContext,
    prompt: Annotated[str, Field(min_length=1, max_length=1000)],
    style: Annotated[str, Choices("style")],
    negative: Annotated[str, Field(max_length=500)] = "",
) -> dict:
    """Merge a library style into a prompt and return the styled prompt and negative.

    Args:
        prompt: The prompt to style.
        style: Name of the library style.
        negative: An existing negative prompt to merge the style's negative into.
    """
    if not prompt.strip():
        raise ToolError("the prompt is empty")
    entry = await ctx.store.library.get(style, "style", ctx.guild_id)  # UnknownEntry lists close names
    return {
        "prompt": entry.apply(prompt),
        "negative": merge_negatives(negative, entry.negative),
        "style": entry.label,
        "description": entry.description,
    }
