"""The guided parts of a 'generate' job: ControlNet maps, a reference (IP-Adapter or FLUX Redux), outpainting.

Resolved in the handler before any diffusion model is touched: control sources are read and preprocessed
(preprocessors are arbiter clients), each map is saved beside the job's images so the user can see what
steered the result, and an outpaint request becomes an inpaint of a larger canvas whose kept pixels are
pasted back exactly afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.config import Settings
from engine.jobs.payloads import ControlPayload, GeneratePayload, first
from engine.jobs.record import output_folder
from engine.jobs.runner import JobContext, JobFailed
from engine.jobs.sources import SourceImages
from engine.runtime.control.models import ControlRegistry
from engine.runtime.diffusion.errors import InvalidRequest, ModelNotAvailable
from engine.runtime.diffusion.guidance import ControlSpec, ReferenceSpec, reference_via
from engine.runtime.diffusion.request import short_errors
from engine.store.jobs import Job

if TYPE_CHECKING:
    from PIL import Image


Post = Callable[["Image.Image"], "Image.Image"]
Preview = Callable[[str, "Image.Image"], Awaitable["Image.Image"]]


@dataclass(frozen=True)
class Guidance:
    """What guided generation needs: the source images, the control registry, the map preview, settings."""

    sources: SourceImages
    control: ControlRegistry
    preview: Preview
    settings: Settings

    def _save_map(self, job: Job, i: int, image: Image.Image) -> str:
        path = output_folder(self.settings, job) / f"{job.id}-control-{i}.png"
        image.save(path, format="PNG")
        return str(path)

    async def _control(
        self, c: ControlPayload, i: int, preset: dict, job: Job, ctx: JobContext
    ) -> tuple[ControlSpec, dict[str, Any]]:
        what = f"the {c.type} control image"
        image, origin = await self.sources.image(c.image, c.source_generation_id, c.source_index, job, ctx, what)
        try:
            ref = self.control.control_ref(preset, c.type)
            cmap = await self.preview(c.type, image) if c.preprocess else image.convert("RGB")
            spec = ControlSpec(type=c.type, image=cmap, model=ref, scale=c.scale, start=c.start, end=c.end)
        except (InvalidRequest, ModelNotAvailable) as e:
            raise JobFailed(str(e)) from None
        except ValidationError as e:
            raise JobFailed(f"control {c.type}: {short_errors(e)}") from None
        path = await ctx.to_thread(self._save_map, job, i, cmap)
        return spec, {**spec.params(), "source": origin, "preprocess": c.preprocess, "map": path}

    async def _reference(
        self, p: GeneratePayload, preset: dict, job: Job, ctx: JobContext
    ) -> tuple[ReferenceSpec, dict[str, Any]]:
        image, origin, others = await self.sources.with_uploads(
            p.reference_image, p.reference_generation_id, p.reference_index, job, ctx, "the reference image",
            [(x, f"blend image {i}") for i, x in enumerate(p.blend_images, 2)],
        )
        others = [im.convert("RGB") for im in others]
        scale = first(p.reference_scale, self.settings.control.reference_scale)
        try:
            adapter = self.control.adapter(preset)
            spec = ReferenceSpec(
                image=image.convert("RGB"), scale=scale, mode=p.reference_mode, adapter=adapter, others=others,
                weights=list(p.reference_weights or []), via=reference_via(preset["family"]),
            )  # fmt: skip
        except InvalidRequest as e:
            raise JobFailed(str(e)) from None
        except ValidationError as e:
            raise JobFailed(f"the reference images: {short_errors(e)}") from None
        blended = {"blend": [origin, *p.blend_images]} if p.blend_images else {}
        return spec, {**spec.params(), "source": origin, **blended}

    def _outpaint(self, p: GeneratePayload, source: Image.Image, fields: dict) -> tuple[Post, dict]:
        from engine.runtime.diffusion.outpaint import plan_outpaint, restore

        gen, o = self.settings.generation, p.outpaint
        assert o is not None
        try:
            plan = plan_outpaint(
                source, o.direction, o.factor, max_pixels=gen.max_pixels, max_side=gen.max_side,
                overlap=self.settings.control.outpaint_overlap_px,
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

    async def add(
        self, p: GeneratePayload, job: Job, ctx: JobContext, preset: dict, source: Image.Image | None,
        fields: dict[str, Any], extra: dict[str, Any],
    ) -> Post | None:  # fmt: skip
        """Fill `fields` (request) and `extra` (recorded params) from the payload's guidance; the post-step."""
        limit = self.settings.control.max_controls
        if len(p.controls) > limit:
            raise JobFailed(f"{len(p.controls)} controls; this server allows {limit}")
        post = None
        if p.controls:
            done = [await self._control(c, i, preset, job, ctx) for i, c in enumerate(p.controls)]
            fields["controls"] = [spec for spec, _ in done]
            extra["controls"] = [info for _, info in done]
        if p.reference_image is not None or p.reference_generation_id is not None:
            fields["reference"], extra["reference"] = await self._reference(p, preset, job, ctx)
        if p.outpaint is not None:
            assert source is not None  # the payload validator requires a source
            post, extra["outpaint"] = await ctx.to_thread(self._outpaint, p, source, fields)
        return post
