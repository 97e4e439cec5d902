"""The describe tool: the vision model looks at one image and suggests prompts that would make it.

Four suggestions, each in the prompt style of the family it is for: comma-separated tags for SD1.5, natural
sentences for SDXL and FLUX. The model's answer is grammar-bounded; the style is then enforced by rules, so
even a weak model's words come back in the shape the family's text encoder expects.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from engine.images import image_limits
from engine.runtime.llm import BadAction, NoVisionProjector, validated
from engine.store.library import UnknownEntry
from tools.context import ToolContext, ToolError
from tools.critique import _data_uri, _pick_image
from tools.registry import grammar_safe

N_SUGGESTIONS = 4
SUGGESTION_CHARS = 120  # bounded by the pattern's repetition: every string closes within max_tokens
DESCRIBE_MAX_TOKENS = 400
TAG_FAMILIES = ("sd15",)
MAX_TAGS = 12
PATTERN = f"^[A-Za-z][A-Za-z0-9 ,.'-]{{2,{SUGGESTION_CHARS - 1}}}$"
Suggestion = Annotated[str, Field(pattern=PATTERN)]
INSTRUCTIONS = {
    "tags": (
        "You write Stable Diffusion 1.5 prompts. Look at the image and give four different prompts that would "
        "make it, each a comma-separated list of short tags (subject, medium, style, lighting, colours), "
        "no sentences."
    ),
    "sentences": (
        "You write prompts for a modern image model. Look at the image and give four different prompts that "
        "would make it, each one or two natural sentences describing subject, setting, style and lighting."
    ),
}
_SPLIT = re.compile(r"\s*(?:[,;.!?\n]|\band\b|\bwith\b)\s*")
_SPACES = re.compile(r"\s+")
_JUNK = re.compile(r"[^\w\s'-]+", re.UNICODE)


class DescribeOut(BaseModel):
    """The vision model's answer: exactly four prompt suggestions."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[Suggestion] = Field(min_length=N_SUGGESTIONS, max_length=N_SUGGESTIONS)


def describe_schema() -> dict:
    """The JSON schema the vision model answers in."""
    # A pattern, not just lengths: every suggestion starts with a letter and holds only prompt characters,
    # so even greedy decoding by a tiny model cannot answer "," or "" (the grammar converter supports it).
    item = {"type": "string", "pattern": PATTERN}
    return {
        "type": "object",
        "properties": {
            "prompts": {"type": "array", "items": item, "minItems": N_SUGGESTIONS, "maxItems": N_SUGGESTIONS}
        },
        "required": ["prompts"],
        "additionalProperties": False,
    }


def prompt_style(family: str) -> str:
    """'tags' for SD1.5 (CLIP-L likes tag lists), 'sentences' for SDXL, FLUX and the newer (T5/VLM) families."""
    return "tags" if family in TAG_FAMILIES else "sentences"


def as_tags(text: str) -> str:
    """A suggestion as lower-case, de-duplicated, comma-separated tags ('' when nothing is left)."""
    tags: list[str] = []
    for part in _SPLIT.split(text.lower()):
        tag = _SPACES.sub(" ", _JUNK.sub(" ", part)).strip(" '-")
        if tag and tag not in tags:
            tags.append(tag)
    return ", ".join(tags[:MAX_TAGS])


def as_sentence(text: str) -> str:
    """A suggestion as one clean sentence: single spaces, a capital first letter and a full stop."""
    clean = _SPACES.sub(" ", text).strip(" ,;")
    if not clean:
        return ""
    clean = clean[0].upper() + clean[1:]
    return clean if clean[-1] in ".!?" else clean + "."


def styled(prompts: list[str], family: str) -> list[str]:
    """The suggestions in the family's prompt style; empty or duplicate ones dropped."""
    shape = as_tags if prompt_style(family) == "tags" else as_sentence
    out: list[str] = []
    for p in prompts:
        s = shape(p)
        if s and s not in out:
            out.append(s)
    return out


async def family_for(ctx: ToolContext, preset: str | None) -> tuple[str, str]:
    """(preset name, family): the named preset, else the user's or guild's default, else the configured one."""
    name = preset
    if not name:
        stored = await ctx.store.settings.pair(ctx.user_id, ctx.guild_id)
        name = stored.user.get("preset") or stored.guild.get("preset") or ctx.settings.generation.default_preset
    try:
        found = await ctx.store.presets.resolve("image", str(name), ctx.user_id, ctx.guild_id)
    except UnknownEntry as e:
        raise ToolError(str(e)) from None
    return found["name"], str(found.get("family", "sdxl"))


def _no_vision(ctx: ToolContext) -> ToolError:
    preset = ctx.services.llm_preset or ctx.settings.llm.preset
    return ToolError(
        f"describe needs a vision model, but the LLM preset '{preset}' has no vision projector (mmproj); "
        "an admin can switch to a vision preset"
    )


async def suggest(
    ctx: ToolContext, generation_id: int | None = None, preset: str | None = None
) -> dict:
    """Four prompt suggestions for the attached, replied-to, named or latest image, styled for `preset`."""
    vision = ctx.services.vision
    if vision is None:
        raise _no_vision(ctx)
    name, family = await family_for(ctx, preset)
    style = prompt_style(family)
    source, _prompt, gen_id = await _pick_image(ctx, generation_id, None)
    uri = await asyncio.to_thread(_data_uri, source, image_limits(ctx.settings.images))
    messages = [
        {"role": "system", "content": INSTRUCTIONS[style]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What prompts would make this image?"},
                {"type": "image_url", "image_url": {"url": uri}},
            ],
        },
    ]
    try:
        reply = await vision.achat(messages, grammar_safe(describe_schema()), max_tokens=DESCRIBE_MAX_TOKENS)
        out = validated(reply, DescribeOut)
    except NoVisionProjector:
        raise _no_vision(ctx) from None
    except BadAction as e:
        raise ToolError(f"the vision model's answer was unusable: {e}") from None
    prompts = styled(out.prompts, family)
    if not prompts:
        raise ToolError("the vision model gave no usable prompt for this image")
    return {"prompts": prompts, "preset": name, "family": family, "style": style, "generation_id": gen_id}


async def describe(ctx: ToolContext, generation_id: Annotated[int, Field(ge=1)] | None = None) -> dict:
    """Look at an image and suggest four prompts that would make it (in the user's preset's prompt style).

    Args:
        generation_id: Earlier generation to describe; omit to use the attached, replied-to or latest image.
    """
    return await suggest(ctx, generation_id)
