"""The guided parts of a 'generate' job: ControlNet maps, an IP-Adapter reference and outpainting.

Resolved in the handler before any diffusion model is touched: control sources are read and preprocessed
(preprocessors are arbiter clients), each map is saved beside the job's images so the user can see what
steered the result, and an outpaint request becomes an inpaint of a larger canvas whose kept pixels are
pasted back exactly afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.diffusion.errors import InvalidRequest, ModelNotAvailable
from engine.diffusion.guidance import ControlSpec, ReferenceSpec
from engine.diffusion.request import short_errors
from engine.generate_payloads import ControlPayload, GeneratePayload, first
from engine.runner import JobContext, JobFailed
from engine.store.jobs import Job

if TYPE_CHECKING:
    from PIL import Image

    from engine.generate import GenerationHandlers

Post = Callable[["Image.Image"], "Image.Image"]


async def _source(h: GenerationHandlers, path: str | None, gen_id: int | None, index: int, job: Job,
                  ctx: JobContext, what: str) -> tuple[Image.Image, str | int]:  # fmt: skip
    """An image from an upload path or a visible generation, and what it was (path or generation id)."""
    if gen_id is not None:
        g = await h._parent(gen_id, job)
        return await h._parent_image(g, index, ctx), g.id
    assert path is not None
    return await h._image(h._upload(path), ctx, what), path


def _save_map(h: GenerationHandlers, job: Job, i: int, image: Image.Image) -> str:
    path = h.output_folder(job) / f"{job.id}-control-{i}.png"
    image.save(path, format="PNG")
    return str(path)


async def _control(h: GenerationHandlers, c: ControlPayload, i: int, preset: dict, job: Job,
                   ctx: JobContext) -> tuple[ControlSpec, dict[str, Any]]:  # fmt: skip
    image, origin = await _source(
        h, c.image, c.source_generation_id, c.source_index, job, ctx, f"the {c.type} control image"
    )
    try:
        ref = h.s.models.control.control_ref(preset, c.type)
        cmap = await h.s.control_preview(c.type, image) if c.preprocess else image.convert("RGB")
        spec = ControlSpec(type=c.type, image=cmap, model=ref, scale=c.scale, start=c.start, end=c.end)
    except (InvalidRequest, ModelNotAvailable) as e:
        raise JobFailed(str(e)) from None
    except ValidationError as e:
        raise JobFailed(f"control {c.type}: {short_errors(e)}") from None
    path = await ctx.to_thread(_save_map, h, job, i, cmap)
    return spec, {**spec.params(), "source": origin, "preprocess": c.preprocess, "map": path}


async def _reference(h: GenerationHandlers, p: GeneratePayload, preset: dict, job: Job,
                     ctx: JobContext) -> tuple[ReferenceSpec, dict[str, Any]]:  # fmt: skip
    image, origin = await _source(
        h, p.reference_image, p.reference_generation_id, p.reference_index, job, ctx, "the reference image"
    )
    scale = first(p.reference_scale, h.s.settings.control.reference_scale)
    try:
        adapter = h.s.models.control.adapter(preset)
        spec = ReferenceSpec(image=image.convert("RGB"), scale=scale, mode=p.reference_mode, adapter=adapter)
    except InvalidRequest as e:
        raise JobFailed(str(e)) from None
    return spec, {**spec.params(), "source": origin}


def _outpaint(
    h: GenerationHandlers, p: GeneratePayload, source: Image.Image, fields: dict
) -> tuple[Post, dict]:
    from engine.diffusion.outpaint import plan_outpaint, restore

    gen, o = h.s.settings.generation, p.outpaint
    assert o is not None
    try:
        plan = plan_outpaint(
            source, o.direction, o.factor, max_pixels=gen.max_pixels, max_side=gen.max_side,
            overlap=h.s.settings.control.outpaint_overlap_px,
        )  # fmt: skip
    except InvalidRequest as e:
        raise JobFailed(str(e)) from None
    fields.update(
        init_image=plan.canvas, mask_image=plan.mask, width=plan.canvas.width, height=plan.canvas.height,
        strength=first(p.strength, 1.0),
    )  # fmt: skip

    def post(image: Image.Image) -> Image.Image:
        out = restore(image, plan)
        out.info.update(image.info)  # keeps the seed and spoiler marks
        return out

    info = {"direction": o.direction, "factor": o.factor, "box": list(plan.box), "scale": plan.scale}
    return post, info


async def add_guidance(
    h: GenerationHandlers, p: GeneratePayload, job: Job, ctx: JobContext, preset: dict,
    source: Image.Image | None, fields: dict[str, Any], extra: dict[str, Any],
) -> Post | None:  # fmt: skip
    """Fill `fields` (request) and `extra` (recorded params) from the payload's guidance; the post-step."""
    if len(p.controls) > h.s.settings.control.max_controls:
        raise JobFailed(f"{len(p.controls)} controls; this server allows {h.s.settings.control.max_controls}")
    post = None
    if p.controls:
        done = [await _control(h, c, i, preset, job, ctx) for i, c in enumerate(p.controls)]
        fields["controls"] = [spec for spec, _ in done]
        extra["controls"] = [info for _, info in done]
    if p.reference_image is not None or p.reference_generation_id is not None:
        fields["reference"], extra["reference"] = await _reference(h, p, preset, job, ctx)
    if p.outpaint is not None:
        assert source is not None  # the payload validator requires a source
        post, extra["outpaint"] = await ctx.to_thread(_outpaint, h, p, source, fields)
    return post
