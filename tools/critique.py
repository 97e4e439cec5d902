"""The critique tool: the vision model looks at one image and returns a critique plus concrete fixes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from engine.images import BadImage, decode_image, image_limits, to_data_uri
from engine.jobs.result import JobResult
from engine.runtime.llm import BadAction, NoVisionProjector, validated
from tools.common import image_file, own_scope, usable_generation
from tools.context import ToolContext, ToolError
from tools.prompts import fill, shipped_prompts
from tools.registry import grammar_safe

CRITIQUE_MAX_TOKENS = 512
SENTENCE_CHARS = 100  # within the grammar converter's safe maxLength: every string closes
MAX_SENTENCES = 3
TERM_CHARS = 48  # grammar-bounded: every string closes within max_tokens
MAX_TERMS = 3
STRENGTHS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
IMAGE_MAX_SIDE = 768
Term = Annotated[str, Field(min_length=1, max_length=48)]


class Fixes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_add: list[Term] = Field(default_factory=list, max_length=3)
    prompt_remove: list[Term] = Field(default_factory=list, max_length=3)
    negative_add: list[Term] = Field(default_factory=list, max_length=3)
    strength: Annotated[float, Field(ge=0.05, le=1.0)] | None = None
    style: Annotated[str, Field(max_length=64)] | None = None


Sentence = Annotated[str, Field(min_length=1, max_length=SENTENCE_CHARS)]


class CritiqueOut(BaseModel):
    """The vision model's answer: the critique as up to four short sentences, so the grammar bounds every string."""

    model_config = ConfigDict(extra="forbid")
    critique: list[Sentence] = Field(min_length=1, max_length=MAX_SENTENCES)
    matches_prompt: bool
    fixes: Fixes


def critique_schema(styles: list[str]) -> dict:
    """The JSON schema the vision model answers in (style limited to known names)."""
    terms = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": TERM_CHARS}, "maxItems": MAX_TERMS}
    style: dict[str, Any] = {"type": "string", "maxLength": 64}
    if styles:
        style = {"enum": styles}
    return {
        "type": "object",
        "properties": {
            "critique": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": SENTENCE_CHARS},
                "minItems": 1,
                "maxItems": MAX_SENTENCES,
            },
            "matches_prompt": {"type": "boolean"},
            "fixes": {
                "type": "object",
                "properties": {
                    "prompt_add": terms,
                    "prompt_remove": terms,
                    "negative_add": terms,
                    "strength": {"enum": [*STRENGTHS, None]},  # an enum: llama.cpp grammars ignore min/max
                    "style": {"anyOf": [style, {"type": "null"}]},
                },
                "required": ["prompt_add", "prompt_remove", "negative_add", "strength", "style"],
                "additionalProperties": False,
            },
        },
        "required": ["critique", "matches_prompt", "fixes"],
        "additionalProperties": False,
    }


def _no_vision(ctx: ToolContext) -> ToolError:
    preset = ctx.services.llm_preset or ctx.settings.llm.preset
    return ToolError(
        f"critique needs a vision model, but the LLM preset '{preset}' has no vision projector (mmproj); "
        "an admin can switch to a vision preset"
    )


def _read_limited(path: Path, max_bytes: int) -> bytes:
    size = path.stat().st_size
    if size > max_bytes:
        raise BadImage(f"image is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.1f} MB")
    return path.read_bytes()


async def _from_job(ctx: ToolContext, job_id: int) -> tuple[bytes | Path, str, int | None]:
    job = await ctx.services.jobs.get(job_id)
    if job is None or job.user_id != ctx.user_id:
        raise ToolError(f"there is no job #{job_id} of yours")
    wait_s = min(shipped_prompts().agent.check.wait_s, ctx.settings.agent.max_wall_s)
    try:
        job = await ctx.services.wait_for_job(job_id, wait_s)
    except TimeoutError:
        raise ToolError(f"job #{job_id} is not finished yet; try the critique again later") from None
    result = JobResult.of(job)
    if result is None:
        raise ToolError(f"job #{job_id} {job.state}: {job.error or 'no image was made'}")
    gen = await usable_generation(ctx, result.generation_id)
    images = gen.images or result.images
    if not images:
        raise ToolError(f"job #{job_id} finished without an image")
    return image_file(ctx, images[0]), gen.prompt, gen.id


async def _pick_image(
    ctx: ToolContext, generation_id: int | None, job_id: int | None
) -> tuple[bytes | Path, str, int | None]:
    """(image bytes or file, its prompt, generation id): job, generation, attachment, replied-to, last one."""
    if job_id is not None:
        return await _from_job(ctx, job_id)
    if generation_id is None:
        attached = [a for a in ctx.attachments if a.data]
        if attached:
            return attached[0].data, "", None
        generation_id = ctx.replied_generation_id
    if generation_id is not None:
        gen = await usable_generation(ctx, generation_id)
    else:
        page = await ctx.store.history.recent(own_scope(ctx), 1)
        if not page.items:
            raise ToolError("there is no image to critique: attach one, reply to one, or make one first")
        gen = page.items[0]
    if not gen.images:
        raise ToolError(f"generation #{gen.id} has no image file")
    return image_file(ctx, gen.images[0]), gen.prompt, gen.id


def _data_uri(source: bytes | Path, limits: dict) -> str:
    data = source if isinstance(source, bytes) else _read_limited(source, limits["max_bytes"])
    return to_data_uri(decode_image(data, **limits), max_side=IMAGE_MAX_SIDE)


async def critique(
    ctx: ToolContext,
    generation_id: Annotated[int, Field(ge=1)] | None = None,
    job_id: Annotated[int, Field(ge=1)] | None = None,
    focus: Annotated[str, Field(max_length=300)] = "",
) -> dict:
    """Look at an image and return a critique with concrete fixes (prompt edits, img2img strength, style).

    Args:
        generation_id: Earlier generation to critique; omit to use the attached, replied-to or latest image.
        job_id: A generate job to wait for and then critique its first image.
        focus: What to pay attention to, e.g. "hands" or "does it match the prompt".
    """
    vision = ctx.services.vision
    if vision is None:
        raise _no_vision(ctx)
    source, prompt, gen_id = await _pick_image(ctx, generation_id, job_id)
    uri = await asyncio.to_thread(_data_uri, source, image_limits(ctx.settings.images))
    texts = shipped_prompts().critique
    system = fill(
        texts.instructions, prompt=prompt or texts.unknown_prompt, focus=focus or texts.default_focus
    )
    messages = [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Critique this image."},
                {"type": "image_url", "image_url": {"url": uri}},
            ],
        },
    ]
    styles = await ctx.store.library.names("style", ctx.guild_id)
    try:
        reply = await vision.achat(
            messages, grammar_safe(critique_schema(styles)), max_tokens=CRITIQUE_MAX_TOKENS
        )
        out = validated(reply, CritiqueOut)
    except NoVisionProjector:
        raise _no_vision(ctx) from None
    except BadAction as e:
        raise ToolError(f"the vision model's answer was unusable: {e}") from None
    if out.fixes.style and out.fixes.style not in styles:
        raise ToolError(f"the vision model suggested an unknown style '{out.fixes.style}'")
    return {
        "critique": " ".join(part.strip() for part in out.critique),
        "matches_prompt": out.matches_prompt,
        "fixes": out.fixes.model_dump(),
        "generation_id": gen_id,
        "prompt": prompt[:300],
    }
