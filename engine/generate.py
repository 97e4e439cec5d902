"""Generation job handlers: 'generate' (txt2img, or an img2img/inpaint edit), 'variation' and 'upscale'.

Each handler resolves everything (preset, style, negative set, user/guild defaults, safety policy) before a
model is touched, runs the blocking model call via ctx.to_thread inside arbiter.use(...), writes PNGs with
metadata to outputs/<yyyy-mm-dd>/<job_id>-<i>.png (i = position in the batch) and records exactly one history
row per job: a retried job finds its row through `generation_jobs` and returns the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.arbiter import ModelTooLarge
from engine.diffusion.errors import GenerationFailed, ImageWithheld, InvalidRequest, ModelNotAvailable
from engine.diffusion.png import save_png
from engine.diffusion.request import build_request, short_errors
from engine.diffusion.safety import is_spoiler
from engine.generate_guided import add_guidance
from engine.generate_payloads import (
    GeneratePayload,
    UpscalePayload,
    VariationPayload,
    first,
    fit_size,
    job_seed,
    parse_payload,
)
from engine.generate_record import record_generation, result_of
from engine.images import BadImage, decode_image, image_limits
from engine.presets import ImagePreset
from engine.runner import Handler, JobContext, JobFailed
from engine.store.history import Generation, Scope
from engine.store.jobs import Job
from engine.store.library import LibraryEntry, UnknownEntry

if TYPE_CHECKING:
    from PIL import Image

    from engine.services import Services

log = logging.getLogger("atelier.generate")
KINDS = ("generate", "variation", "upscale")
# keys of the user's (then the guild's) saved settings used when a request leaves them out
DEFAULT_KEYS = ("preset", "style", "aspect", "negative", "count", "steps", "cfg", "scheduler")
POLICIES = ("block", "spoiler", "off")
# failures a retry cannot fix: the job fails at once with the message
PERMANENT = (InvalidRequest, GenerationFailed, ModelNotAvailable, ModelTooLarge)
_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass
class Plan:
    """One diffusion job, fully resolved before any model is touched."""

    preset: dict[str, Any]  # the validated stored preset (name, model, family, defaults...)
    prompt: str
    negative: str
    style: str
    fields: dict[str, Any]  # GenerationRequest fields besides prompt/negative
    aspect: str | None = None
    parent_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in params
    post: Callable[[Image.Image], Image.Image] | None = None  # applied to each image (outpaint restore)


class GenerationHandlers:
    """The handlers for KINDS, sharing one Services."""

    def __init__(self, services: Services) -> None:
        self.s = services

    def handlers(self) -> dict[str, Handler]:
        """{kind: async handler(job, ctx) -> result dict} for JobRunner."""
        return {"generate": self.generate, "variation": self.variation, "upscale": self.upscale}

    # ----- resolution -----
    async def _policy_and_defaults(self, job: Job) -> tuple[str, dict[str, Any]]:
        store = self.s.store.settings
        user = await store.get("user", job.user_id)
        guild = await store.get("guild", job.guild_id) if job.guild_id else {}
        defaults = {k: v for src in (guild, user) for k, v in src.items() if k in DEFAULT_KEYS}
        policy = guild.get("safety") or self.s.settings.generation.safety
        if policy not in POLICIES:
            raise JobFailed(f"this server's safety setting {policy!r} is not one of {', '.join(POLICIES)}")
        return policy, defaults

    async def _preset(self, name: str, job: Job) -> dict[str, Any]:
        try:
            data = await self.s.store.presets.resolve("image", name, job.user_id, job.guild_id)
        except UnknownEntry as e:
            raise JobFailed(str(e)) from None
        try:
            return ImagePreset.model_validate({k: v for k, v in data.items() if k != "scope"}).model_dump()
        except ValidationError as e:
            raise JobFailed(f"image preset '{name}' is invalid: {short_errors(e)}") from None

    async def _style(self, label: str, job: Job) -> LibraryEntry | None:
        if not label:
            return None
        try:
            return await self.s.store.library.get(label, "style", job.guild_id)
        except UnknownEntry as e:
            raise JobFailed(str(e)) from None

    async def _negative(self, text: str, job: Job) -> str:
        """The label of a library negative set becomes its text; anything else is literal negative text."""
        text = text.strip()
        if _LABEL.match(text):
            with contextlib.suppress(UnknownEntry):
                return (await self.s.store.library.get(text, "negative", job.guild_id)).content
        return text

    async def _loras(self, loras: list) -> list[tuple[str, float]]:
        try:
            return [(await self.s.models.lora_ref(str(ref)), float(scale)) for ref, scale in loras]
        except ModelNotAvailable as e:
            raise JobFailed(str(e)) from None

    async def _parent(self, gen_id: int, job: Job) -> Generation:
        g = await self.s.store.history.get(gen_id, Scope(job.user_id, job.guild_id, include_guild=True))
        if g is None:
            raise JobFailed(f"generation #{gen_id} does not exist or is not visible to you")
        return g

    async def _image(self, path: str, ctx: JobContext, what: str) -> Image.Image:
        try:
            data = await ctx.to_thread(Path(path).read_bytes)
            return await ctx.to_thread(decode_image, data, **image_limits(self.s.settings.images))
        except OSError as e:
            raise JobFailed(f"{what} cannot be read ({path}): {e.strerror or e}") from None
        except BadImage as e:
            raise JobFailed(f"{what}: {e}") from None

    async def _parent_image(self, g: Generation, index: int, ctx: JobContext) -> Image.Image:
        if index >= len(g.images):
            raise JobFailed(f"generation #{g.id} has {len(g.images)} image(s); there is no image {index + 1}")
        return await self._image(g.images[index], ctx, f"image {index + 1} of generation #{g.id}")

    def _upload(self, path: str) -> str:
        """Source images and masks are read only from the data or outputs directory (never anywhere else)."""
        roots = [self.s.settings.path(n).resolve() for n in ("data_dir", "outputs")]
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(r) for r in roots):
            where = " or ".join(str(r) for r in roots)
            raise JobFailed(f"source images and masks must be files under {where}; got {path}")
        return str(resolved)

    async def _model(self, preset: dict[str, Any]) -> Any:
        try:
            return await self.s.models.image_model(await self.s.models.image_preset(preset))
        except ModelNotAvailable as e:
            raise JobFailed(str(e)) from None

    # ----- handlers -----
    async def generate(self, job: Job, ctx: JobContext) -> dict:
        """txt2img, or img2img/inpaint when a source (and mask) is given."""
        if (done := await self._recorded(job)) is not None:
            return done
        p = parse_payload(GeneratePayload, job.payload, "generate")
        policy, defaults = await self._policy_and_defaults(job)
        preset = await self._preset(first(p.preset, defaults.get("preset"), self.s.default_image_preset), job)
        style = await self._style(first(p.style, defaults.get("style"), preset["style"]), job)
        negative = await self._negative(first(p.negative, defaults.get("negative"), preset["negative"]), job)
        prompt = style.apply(p.prompt) if style else p.prompt
        if style and style.negative:
            negative = ", ".join(x for x in (negative, style.negative) if x)
        loras = p.loras if p.loras is not None else [(x["path"], x["scale"]) for x in preset["loras"]]
        fields: dict[str, Any] = {
            "steps": first(p.steps, defaults.get("steps"), preset["steps"]),
            "cfg": first(p.cfg, defaults.get("cfg"), preset["cfg"]),
            "scheduler": first(p.scheduler, defaults.get("scheduler"), preset["scheduler"]),
            "batch": first(p.count, defaults.get("count"), 1),
            "seed": first(p.seed, job_seed(job)),
            "strength": p.strength,
            "safety": policy,
            "loras": await self._loras(loras),
        }
        parent_id, source = None, None
        if p.source_generation_id is not None:
            g = await self._parent(p.source_generation_id, job)
            source, parent_id = await self._parent_image(g, p.source_index, ctx), g.id
        elif p.source_image is not None:
            source = await self._image(self._upload(p.source_image), ctx, "the source image")
        if source is not None:
            fields["init_image"] = source
            if p.mask is not None:
                fields["mask_image"] = await self._image(self._upload(p.mask), ctx, "the mask")
        sized = p.aspect is not None or p.width is not None or p.height is not None
        # an edit keeps its source's shape unless the request itself sizes it
        aspect = p.aspect if sized or source is not None else defaults.get("aspect")
        if aspect is None:
            w, h = preset["width"], preset["height"]
            if source is not None and not sized:
                w, h = fit_size(source.size, w * h)
            fields["width"], fields["height"] = first(p.width, w), first(p.height, h)
        extra = {"user_prompt": p.prompt, "aspect": aspect}
        post = await add_guidance(self, p, job, ctx, preset, source, fields, extra)
        if p.outpaint is not None:  # the canvas decides the size
            aspect = extra["aspect"] = None
        plan = Plan(
            preset, prompt, negative, style.label if style else "", fields, aspect, parent_id, extra, post
        )
        return await self._diffuse(job, ctx, plan)

    async def variation(self, job: Job, ctx: JobContext) -> dict:
        """img2img of a generation's image with its prompt and parameters, a new seed, strength ~0.6."""
        if (done := await self._recorded(job)) is not None:
            return done
        p = parse_payload(VariationPayload, job.payload, "variation")
        policy, _ = await self._policy_and_defaults(job)
        g = await self._parent(p.generation_id, job)
        image = await self._parent_image(g, p.index, ctx)
        preset = await self._preset(g.preset, job)
        gp = g.params
        w, h = fit_size(image.size, image.width * image.height)
        fields: dict[str, Any] = {k: gp[k] for k in ("steps", "cfg", "scheduler") if k in gp}
        fields |= {
            "width": gp.get("width", w),
            "height": gp.get("height", h),
            "batch": p.count,
            "seed": first(p.seed, job_seed(job)),
            "strength": p.strength,
            "init_image": image,
            "safety": policy,
            "loras": await self._loras(gp.get("loras", [])),
        }
        extra = {"parent_seed": g.seed, "source_index": p.index}
        plan = Plan(preset, g.prompt, g.negative, g.style, fields, None, g.id, extra)
        return await self._diffuse(job, ctx, plan)

    async def upscale(self, job: Job, ctx: JobContext) -> dict:
        """2x/4x of one image of a generation (dedicated upscaler if configured, else tiled img2img)."""
        if (done := await self._recorded(job)) is not None:
            return done
        p = parse_payload(UpscalePayload, job.payload, "upscale")
        policy, _ = await self._policy_and_defaults(job)
        g = await self._parent(p.generation_id, job)
        image = await self._parent_image(g, p.index, ctx)
        preset = await self._preset(g.preset, job)
        gp = g.params
        seeds = gp.get("seeds") or [g.seed]
        seed = first(p.seed, seeds[p.index] if p.index < len(seeds) else g.seed)
        kw = {k: gp.get(k) for k in ("cfg", "scheduler")}
        # the hires pass denoises steps × strength steps: keep at least one unless steps were given
        kw["steps"] = first(p.steps, max(int(gp.get("steps") or preset["steps"]), math.ceil(1 / p.strength)))
        kw |= {"negative": g.negative, "strength": p.strength, "safety": policy}
        try:  # here or on an `atelier worker` (queue.backend)
            big = await self.s.renderer.upscale(preset, image, p.factor, g.prompt, seed, kw, ctx)
        except (ImageWithheld, *PERMANENT) as e:
            raise JobFailed(str(e)) from None
        params = {
            **kw,
            "mode": "upscale",
            "factor": p.factor,
            "width": big.width,
            "height": big.height,
            "source_index": p.index,
            "upscaler": self.s.settings.generation.upscaler,
            "seeds": [seed],
            "spoilers": [is_spoiler(big)],
            "withheld": 0,
            "withheld_message": None,
        }
        plan = Plan(preset, g.prompt, g.negative, g.style, {}, None, g.id)
        return await self._deliver(job, ctx, plan, [big], [0], params)

    # ----- running and recording -----
    async def _diffuse(self, job: Job, ctx: JobContext, plan: Plan) -> dict:
        fields = {k: v for k, v in plan.fields.items() if v is not None}
        gen = self.s.settings.generation
        try:
            req = build_request(
                plan.preset, gen, aspect=plan.aspect, prompt=plan.prompt, negative=plan.negative, **fields
            )
        except InvalidRequest as e:
            raise JobFailed(str(e)) from None
        withheld: ImageWithheld | None = None
        try:  # batched with compatible jobs, here or on an `atelier worker` (queue.backend)
            images = await self.s.renderer.generate(plan.preset, req, ctx)
        except ImageWithheld as e:
            if not e.delivered:
                raise JobFailed(str(e)) from None
            images, withheld = e.delivered, e
        except PERMANENT as e:
            raise JobFailed(str(e)) from None
        if plan.post is not None:
            post = plan.post
            images = await ctx.to_thread(lambda: [post(im) for im in images])
        seeds = [int(im.info["atelier_seed"]) for im in images]
        params = {
            **req.params(),
            **plan.extra,
            "seeds": seeds,
            "spoilers": [is_spoiler(im) for im in images],
            "withheld": len(withheld.withheld) if withheld else 0,
            "withheld_message": str(withheld) if withheld else None,
        }
        return await self._deliver(job, ctx, plan, images, [s - req.seed for s in seeds], params)

    def output_folder(self, job: Job) -> Path:
        """outputs/<yyyy-mm-dd of the job's creation>, created if missing."""
        day = dt.datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d")
        folder = self.s.settings.path("outputs") / day
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _save(self, job: Job, images: list[Image.Image], positions: list[int], meta: dict) -> list[str]:
        """Write each PNG atomically (temp file + rename) so a crash never leaves a torn file."""
        folder = self.output_folder(job)
        paths = []
        for image, pos, seed in zip(images, positions, meta["params"]["seeds"], strict=True):
            path = folder / f"{job.id}-{pos}.png"
            tmp = path.with_name(f".{path.name}.tmp")
            save_png(image, tmp, {**meta, "seed": seed})
            os.replace(tmp, path)
            paths.append(str(path))
        return paths

    async def _deliver(
        self, job: Job, ctx: JobContext, plan: Plan, images: list, positions: list[int], params: dict
    ) -> dict:
        params = {**params, "kind": job.kind, "job_id": job.id}
        row: dict[str, Any] = {
            "user_id": job.user_id,
            "guild_id": job.guild_id,
            "channel_id": job.channel_id,
            "prompt": plan.prompt,
            "negative": plan.negative,
            "params": params,
            "seed": params["seeds"][0],
            "model": plan.preset["model"],
            "preset": plan.preset["name"],
            "style": plan.style,
            "parent_id": plan.parent_id,
        }
        meta = {k: row[k] for k in ("prompt", "negative", "params", "model", "preset", "style", "parent_id")}
        row["images"] = await ctx.to_thread(self._save, job, images, positions, meta | {"job_id": job.id})
        gen_id, created = await record_generation(self.s.store.db, job.id, row)
        if not created:  # another attempt of this job recorded first: its row is the truth
            return await self._recorded(job) or result_of(gen_id, row)
        return result_of(gen_id, row)

    async def _recorded(self, job: Job) -> dict | None:
        """The result of an earlier attempt of this job that already wrote its history row, or None."""
        row = await self.s.store.db.fetchone(
            "SELECT g.* FROM generation_jobs j JOIN generations g ON g.id = j.generation_id WHERE j.job_id = ?",
            (job.id,),
        )
        if row is None:
            return None
        g = Generation.from_row(row)
        log.info("job %s already recorded generation %s; returning it without regenerating", job.id, g.id)
        return result_of(g.id, dataclasses.asdict(g))


def generation_handlers(services: Services) -> dict[str, Handler]:
    """The handlers for 'generate', 'variation' and 'upscale' bound to `services`."""
    return GenerationHandlers(services).handlers()
