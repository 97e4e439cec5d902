"""The generate tool: check the request, then enqueue one 'generate' job (the job runner draws it)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from engine.runtime.control import CONTROL_TYPES, MAX_CONTROLS, OUTPAINT_DIRECTIONS, REFERENCE_MODES
from engine.runtime.diffusion.request import ASPECTS, MAX_SEED, NEGATIVE_MAX_CHARS, PROMPT_MAX_CHARS
from engine.store.history import Generation
from tools.common import usable_generation
from tools.context import ToolContext, ToolError
from tools.editing import FALLBACK_NOTE, FALLBACK_STRENGTH, edit_available, edit_fields
from tools.registry import Choices
from tools.sources import (
    DEFAULT_OUTPAINT_FACTOR,
    OUTPAINT_FACTORS,
    Sources,
    check_combinations,
    control_fields,
    image_attachments,
    reference_fields,
    source_prompt,
    vague_prompt,
)

Aspect = Literal[tuple(ASPECTS)]  # type: ignore[valid-type]
ControlType = Literal[CONTROL_TYPES]  # type: ignore[valid-type]
ReferenceMode = Literal[REFERENCE_MODES]  # type: ignore[valid-type]
OutpaintDirection = Literal[OUTPAINT_DIRECTIONS]  # type: ignore[valid-type]
INHERITED_PARAMS = ("steps", "cfg", "scheduler")


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
    prompt: Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)],
    negative: Annotated[str, Field(max_length=NEGATIVE_MAX_CHARS)] = "",
    preset: Annotated[str, Choices("preset")] | None = None,
    style: Annotated[str, Choices("style")] | None = None,
    aspect: Aspect | None = None,
    count: Annotated[int, Field(ge=1, le=4)] = 1,
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None,
    strength: Annotated[float, Field(ge=0.05, le=1.0)] | None = None,
    source_generation_id: Annotated[int, Field(ge=1)] | None = None,
    control: Annotated[list[ControlType], Field(min_length=1, max_length=MAX_CONTROLS)] | None = None,
    control_scale: Annotated[float, Field(ge=0.0, le=2.0)] | None = None,
    control_generation_id: Annotated[int, Field(ge=1)] | None = None,
    reference: ReferenceMode | None = None,
    reference_scale: Annotated[float, Field(ge=0.0, le=1.5)] | None = None,
    reference_generation_id: Annotated[int, Field(ge=1)] | None = None,
    outpaint: OutpaintDirection | None = None,
    outpaint_factor: Annotated[float, Field(ge=OUTPAINT_FACTORS[0], le=OUTPAINT_FACTORS[1])] | None = None,
    edit: bool = False,
    best_of: Annotated[int, Field(ge=2, le=4)] | None = None,
    style_code: Annotated[str, Field(min_length=4, max_length=9)] | None = None,
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
        control: Keep the structure of the user's image: openpose = same pose, canny = same composition/edges, depth = same layout; up to 3.
        control_scale: How strongly control is followed, 0-2 (default 1).
        control_generation_id: Earlier generation to take the control image from; omit to use the attached or replied image.
        reference: Use the user's image as a reference: style = its look, subject = its character or object.
        reference_scale: How strongly the reference is followed, 0-1.5 (default 0.6).
        reference_generation_id: Earlier generation to use as the reference; omit to use the attached or replied image.
        outpaint: Zoom out (all) or extend the image to the left, right, up or down; the original pixels are kept.
        outpaint_factor: How much bigger the canvas gets, 1.1-4 (default 2).
        edit: Change the replied or attached image as the prompt says ("make it night"), keeping the rest.
        best_of: Draw this many (2-4) and show the best by CLIP score first ("make 4 and pick the best").
        style_code: A shared style code the user gave (like X7K2): its style or preset is used.
    """
    if not prompt.strip():
        raise ToolError("the prompt is empty")
    max_batch = ctx.settings.generation.max_batch
    count = best_of or count
    if count > max_batch:
        raise ToolError(f"count {count} is over this server's limit of {max_batch} images")
    args = {
        "strength": strength,
        "aspect": aspect,
        "control": control,
        "control_scale": control_scale,
        "control_generation_id": control_generation_id,
        "reference": reference,
        "reference_scale": reference_scale,
        "reference_generation_id": reference_generation_id,
        "outpaint": outpaint,
        "outpaint_factor": outpaint_factor,
    }
    check_combinations(args)
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
    } | ({"best_of": best_of} if best_of else {})
    sources = Sources(ctx)
    extra: dict[str, Any] = {}
    if edit and not edit_available(ctx):  # today's img2img from the image, and the reply says so
        payload["strength"] = args["strength"] = strength = strength or FALLBACK_STRENGTH
        extra["notes"] = [FALLBACK_NOTE]
    if edit and edit_available(ctx):
        if args["outpaint"] or args["control"] or args["reference"]:
            raise ToolError("edit takes no outpaint, control or reference; leave those out")
        extra |= await edit_fields(ctx, payload, sources, source_generation_id)
        source_generation_id = extra.pop("based_on")
    elif args["outpaint"] is not None:
        source_generation_id = await _outpaint(payload, sources, source_generation_id, args, extra)
    else:
        source_generation_id = await _source(ctx, payload, sources, source_generation_id, strength)
    if args["control"] is not None:
        payload["controls"], extra["controls"] = await control_fields(sources, args)
    if args["reference"] is not None:
        fields, extra["reference"] = await reference_fields(sources, args)
        payload.update(fields)
    if style_code:  # the code names the style or preset (JobSubmitter resolves it); nothing inherited clashes
        payload |= {"style_code": style_code, "style": style, "preset": preset}
    await _check_names(ctx, payload["preset"], payload["style"])
    submitter, jobs = ctx.services.submitter, ctx.services.jobs
    assert submitter is not None  # tools.context.Services always has one
    job_id = await submitter.submit(ctx.requester, "generate", payload, reply_to=dict(ctx.reply_to))
    job = await jobs.require(job_id)
    result = {
        "job_ids": [job_id],
        "queue_position": await jobs.position(job_id),
        "prompt": payload["prompt"],
        "seed": job.payload["seed"],  # the job's own (JobSubmitter seeds it when the request did not)
        "preset": job.payload.get("preset"),  # a style code's, when one was given
        "style": job.payload.get("style"),
        "count": count,
        "mode": "edit" if payload.get("edit") else _mode(args),
        "based_on": source_generation_id,
        **extra,
    }
    return result


def _mode(args: dict[str, Any]) -> str:
    """The mode for the result: txt2img, img2img, or the special modes joined by + (control+reference)."""
    parts = [k for k in ("outpaint", "control", "reference") if args[k] is not None]
    if args["strength"] is not None:
        parts.append("img2img")
    return "+".join(parts) or "txt2img"


async def _source(
    ctx: ToolContext,
    payload: dict[str, Any],
    sources: Sources,
    source_generation_id: int | None,
    strength: float | None,
) -> int | None:
    """Inherit from source_generation_id (img2img of it with strength), or img2img of an attachment."""
    if source_generation_id is None and strength is not None and ctx.replied_generation_id:
        source_generation_id = ctx.replied_generation_id
    if source_generation_id is not None:
        _inherit(payload, await usable_generation(ctx, source_generation_id))
        if strength is not None:  # img2img from the source's image; without strength: same seed/params
            payload["source_generation_id"] = source_generation_id
    elif strength is not None:
        if not image_attachments(ctx):
            raise ToolError(
                "strength needs a source image: reply to a generation, attach an image or give source_generation_id"
            )
        payload["source_image"] = (await sources.resolve(None, "strength")).image
    return source_generation_id


async def _outpaint(
    payload: dict[str, Any],
    sources: Sources,
    source_generation_id: int | None,
    args: dict[str, Any],
    extra: dict[str, Any],
) -> int | None:
    """Extend the canvas of source_generation_id > the attachment > the replied image; returns the generation."""
    src = await sources.resolve(source_generation_id, "outpaint")
    payload["outpaint"] = {
        "direction": args["outpaint"],
        "factor": args["outpaint_factor"] or DEFAULT_OUTPAINT_FACTOR,
    }
    payload.update(src.fields("source_generation_id", "source_image"))
    extra["outpaint"] = {**payload["outpaint"], "from": src.label}
    gen = src.generation
    if gen is None:
        return None
    _inherit(payload, gen)
    payload["aspect"] = None  # the canvas size comes from the source image and the factor
    if vague_prompt(payload["prompt"]):
        payload["prompt"] = source_prompt(gen)
        extra["prompt_from"] = f"generation #{gen.id}"
    return gen.id
