"""Generation job handlers: 'generate' (txt2img, or an img2img/inpaint edit), 'variation' and 'upscale'.

Each handler resolves everything (preset, style, negative set, user/guild defaults, safety policy) before a
model is touched, runs the blocking model call via ctx.to_thread inside arbiter.use(...), writes PNGs with
metadata to outputs/<yyyy-mm-dd>/<job_id>-<i>.png (i = position in the batch) and records exactly one history
row per job: a retried job finds its row through `generation_jobs` and returns the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.config import Settings
from engine.jobs.admission import observed_rate
from engine.jobs.cache import JobCache
from engine.jobs.creation import check_family, choose
from engine.jobs.defaults import pick, policy_of, saved_defaults
from engine.jobs.evaluate import Evaluator, best_first
from engine.jobs.guided import Guidance, Preview
from engine.jobs.payloads import GeneratePayload, UpscalePayload, VariationPayload, fit_size, parse_payload
from engine.jobs.record import result_of, save_images
from engine.jobs.runner import Handler, JobContext, JobFailed
from engine.jobs.sources import SourceImages
from engine.jobs.style_codes import shared_preset, shared_style
from engine.presets import ImagePreset
from engine.runtime.arbiter import ModelTooLarge
from engine.runtime.diffusion.errors import GenerationFailed, ImageWithheld, InvalidRequest, ModelNotAvailable
from engine.runtime.diffusion.request import GenerationRequest, build_request, short_errors
from engine.runtime.diffusion.safety import is_spoiler
from engine.runtime.models import ModelRegistry
from engine.runtime.render import Renderer
from engine.store import Store
from engine.store.cache import Costs
from engine.store.history import Generation
from engine.store.jobs import Job
from engine.store.library import LibraryEntry, Saved, UnknownEntry

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("atelier.generate")
KINDS = ("generate", "variation", "upscale")
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
    cache_key: str | None = None  # kept in the result cache with the history row
    rate: float | None = None  # the render's GPU-seconds per work unit, folded into the preset's rate with the row


class GenerationHandlers:
    """The handlers for KINDS, with explicit dependencies (no shared services object)."""

    def __init__(
        self, store: Store, settings: Settings, renderer: Renderer, models: ModelRegistry, default_preset: str,
        preview: Preview,
    ) -> None:  # fmt: skip
        self.store = store
        self.settings = settings
        self.renderer = renderer
        self.models = models
        self.default_preset = default_preset
        self.sources = SourceImages(store.history, settings)
        self.guidance = Guidance(self.sources, models.control, preview, settings)
        self.cache = JobCache(store, settings)
        self.evaluator = Evaluator(models.arbiter, settings)

    def handlers(self) -> dict[str, Handler]:
        """{kind: async handler(job, ctx) -> result dict} for JobRunner."""
        return {"generate": self.generate, "variation": self.variation, "upscale": self.upscale}

    # ----- resolution -----
    def _policy(self, stored: Saved) -> str:
        try:
            return policy_of(stored.guild, self.settings.generation.safety)
        except ValueError as e:
            raise JobFailed(str(e)) from None

    @staticmethod
    def _seed(seed: int | None, job: Job) -> int:
        if seed is None:  # JobSubmitter gives every job its seed
            raise JobFailed(f"job #{job.id} has no seed: jobs are submitted through JobSubmitter")
        return seed

    async def _preset(self, name: str, job: Job, shared: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            data = shared or await self.store.presets.resolve("image", name, job.user_id, job.guild_id)
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
            return await self.store.library.get(label, "style", job.guild_id)
        except UnknownEntry as e:
            raise JobFailed(str(e)) from None

    async def _negative(self, text: str, job: Job) -> str:
        """The label of a library negative set becomes its text; anything else is literal negative text."""
        text = text.strip()
        if _LABEL.match(text):
            with contextlib.suppress(UnknownEntry):
                return (await self.store.library.get(text, "negative", job.guild_id)).content
        return text

    async def _from_parent(
        self, job: Job, ctx: JobContext, generation_id: int, index: int
    ) -> tuple[str, Generation, Image.Image, dict[str, Any]]:
        """The safety policy, the parent generation, its image `index` and its validated preset."""
        policy = self._policy(await self.store.settings.pair(job.user_id, job.guild_id))
        g = await self.sources.parent(generation_id, job)
        image = await self.sources.parent_image(g, index, ctx)
        return policy, g, image, await self._preset(g.preset, job)

    async def _loras(self, loras: list) -> list[tuple[str, float]]:
        try:
            return [(await self.models.lora_ref(str(ref)), float(scale)) for ref, scale in loras]
        except ModelNotAvailable as e:
            raise JobFailed(str(e)) from None

    # ----- handlers -----
    async def generate(self, job: Job, ctx: JobContext) -> dict:
        """txt2img, or img2img/inpaint when a source (and mask) is given."""
        if (done := await self._retried(job)) is not None:
            return done
        p = parse_payload(GeneratePayload, job.payload, "generate")
        reads = ctx.reads  # what the submission read, when this runner took the job as it was queued
        # read once for the whole job
        stored = reads.stored if reads else await self.store.settings.pair(job.user_id, job.guild_id)
        policy = self._policy(stored)
        saved = saved_defaults(stored)
        try:  # an edit, a draft or the usual preset (admission checked it at submission)
            choice = choose(p, saved, self.settings.generation, self.default_preset)
            saved = choice.saved(saved)
            known = shared_preset(p, choice.preset) or (reads.presets.get(choice.preset) if reads else None)
            preset = await self._preset(choice.preset, job, known)
            check_family(choice, preset["family"], choice.preset)
        except InvalidRequest as e:
            raise JobFailed(str(e)) from None
        label = "" if choice.edit else str(pick(p.style, saved, "style", preset["style"]))
        style = shared_style(p, label) or await self._style(label, job)
        negative = await self._negative(str(pick(p.negative, saved, "negative", preset["negative"])), job)
        prompt = style.apply(p.prompt) if style else p.prompt
        if style and style.negative:
            negative = ", ".join(x for x in (negative, style.negative) if x)
        loras = p.loras if p.loras is not None else [(x["path"], x["scale"]) for x in preset["loras"]]
        fields: dict[str, Any] = {
            "steps": pick(p.steps, saved, "steps", preset["steps"]),
            "cfg": pick(p.cfg, saved, "cfg", preset["cfg"]),
            "scheduler": pick(p.scheduler, saved, "scheduler", preset["scheduler"]),
            "batch": pick(p.best_of or p.count, saved, "count", 1),
            "seed": self._seed(p.seed, job),
            "strength": p.strength,
            "safety": policy,
            "loras": await self._loras(loras),
        }
        source, parent_id, mask, others = await self.sources.of_request(p, job, ctx)
        if source is not None:
            fields["init_image"] = source
            if mask is not None:
                fields["mask_image"] = mask
            if others:  # an edit's other sources, in order after the first
                fields["edit_images"] = others
        sized = p.aspect is not None or p.width is not None or p.height is not None
        # an edit keeps its source's shape unless the request itself sizes it
        aspect = p.aspect if sized or source is not None else saved.get("aspect")
        if aspect is None:
            w, h = preset["width"], preset["height"]
            if source is not None and not sized:
                w, h = fit_size(source.size, w * h)
            fields["width"] = p.width if p.width is not None else w
            fields["height"] = p.height if p.height is not None else h
        extra = {"user_prompt": p.prompt, "aspect": aspect} | ({"best_of": p.best_of} if p.best_of else {})
        extra |= choice.extra(p.prompt) | ({"style_code": p.style_code} if p.style_code else {})
        post = await self.guidance.add(p, job, ctx, preset, source, fields, extra)
        if p.outpaint is not None:  # the canvas decides the size
            aspect = extra["aspect"] = None
        plan = Plan(
            preset, prompt, negative, style.label if style else "", fields, aspect, parent_id, extra, post
        )
        plan.cache_key, hit = await self.cache.hit(job, p, plan, stored.user)  # a fixed-seed repeat: at once
        return hit if hit is not None else await self._diffuse(job, ctx, plan)

    async def variation(self, job: Job, ctx: JobContext) -> dict:
        """img2img of a generation's image with its prompt and parameters, a new seed, strength ~0.6."""
        if (done := await self._retried(job)) is not None:
            return done
        p = parse_payload(VariationPayload, job.payload, "variation")
        policy, g, image, preset = await self._from_parent(job, ctx, p.generation_id, p.index)
        gp = g.params
        w, h = fit_size(image.size, image.width * image.height)
        fields: dict[str, Any] = {k: gp[k] for k in ("steps", "cfg", "scheduler") if k in gp}
        fields |= {
            "width": gp.get("width", w),
            "height": gp.get("height", h),
            "batch": p.count,
            "seed": self._seed(p.seed, job),
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
        if (done := await self._retried(job)) is not None:
            return done
        p = parse_payload(UpscalePayload, job.payload, "upscale")
        policy, g, image, preset = await self._from_parent(job, ctx, p.generation_id, p.index)
        seeds = g.params.get("seeds") or [g.seed]
        seed = p.seed if p.seed is not None else (seeds[p.index] if p.index < len(seeds) else g.seed)
        kw = {k: g.params.get(k) for k in ("cfg", "scheduler")}
        # the hires pass denoises steps × strength steps: keep at least one unless steps were given
        least = max(int(g.params.get("steps") or preset["steps"]), math.ceil(1 / p.strength))
        kw["steps"] = p.steps if p.steps is not None else least
        kw |= {"negative": g.negative, "strength": p.strength, "safety": policy}
        try:  # here or on an `atelier worker` (queue.backend)
            big = await self.renderer.upscale(preset, image, p.factor, g.prompt, seed, kw, ctx)
        except (ImageWithheld, *PERMANENT) as e:
            raise JobFailed(str(e)) from None
        params = {
            **kw,
            "mode": "upscale",
            "factor": p.factor,
            "width": big.width,
            "height": big.height,
            "source_index": p.index,
            "upscaler": self.settings.generation.upscaler,
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
        gen = self.settings.generation
        try:
            req = build_request(
                plan.preset, gen, aspect=plan.aspect, prompt=plan.prompt, negative=plan.negative, **fields
            )
        except InvalidRequest as e:
            raise JobFailed(str(e)) from None
        withheld: ImageWithheld | None = None
        started = time.monotonic()
        try:  # batched with compatible jobs, here or on an `atelier worker` (queue.backend)
            images = await self.renderer.generate(plan.preset, req, ctx)
        except ImageWithheld as e:
            if not e.delivered:
                raise JobFailed(str(e)) from None
            images, withheld = e.delivered, e
        except PERMANENT as e:
            raise JobFailed(str(e)) from None
        if plan.post is not None:
            post = plan.post
            images = await ctx.to_thread(lambda: [post(im) for im in images])
        plan.rate = observed_rate(req.steps, req.width * req.height, req.batch, time.monotonic() - started)
        return await self._scored(job, ctx, plan, req, images, withheld)

    async def _scored(
        self, job: Job, ctx: JobContext, plan: Plan, req: GenerationRequest, images: list, withheld: ImageWithheld | None
    ) -> dict:  # fmt: skip
        """Score the rendered images (the best first for best-of), then deliver them with their params."""
        scores = await self._scores(plan, images, ctx)
        if scores is not None and plan.extra.get("best_of"):  # the best first; the others follow
            order = best_first(scores)
            images, scores = [images[i] for i in order], [scores[i] for i in order]
        seeds = [int(im.info["atelier_seed"]) for im in images]
        params = {
            "clip_scores": scores,
            **req.params(),
            **plan.extra,
            "seeds": seeds,
            "spoilers": [is_spoiler(im) for im in images],
            "withheld": len(withheld.withheld) if withheld else 0,
            "withheld_message": str(withheld) if withheld else None,
        }
        return await self._deliver(job, ctx, plan, images, [s - req.seed for s in seeds], params)

    async def _scores(self, plan: Plan, images: list, ctx: JobContext) -> list[float] | None:
        """CLIP scores of the images (None when scoring is off or fails: a result is never lost to it)."""
        try:
            return await self.evaluator.scores(plan.preset, plan.prompt, images, ctx)
        except Exception:  # noqa: BLE001 - scoring is best effort
            log.exception("CLIP scoring failed for preset %s", plan.preset.get("name"))
            return None

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
        meta |= {"job_id": job.id}
        row["images"] = await ctx.to_thread(save_images, self.settings, job, images, positions, meta)
        keep = self.cache.keeper(plan.cache_key, params)
        done: dict[str, Any] = {}

        def then(conn: sqlite3.Connection, gen_id: int) -> None:  # the row's extras and the job's end, at once
            if keep is not None:
                keep(conn, gen_id)
            self._fold_rate(conn, plan)
            done["result"] = result = result_of(gen_id, row).model_dump()
            done["job"] = ctx.finish_in(conn, result)

        gen_id, created = await self.store.history.record_for_job(job.id, row, then)
        if not created:  # another attempt of this job recorded first: its row is the truth
            return await self._recorded(job) or result_of(gen_id, row).model_dump()
        ctx.finished = done["job"]  # committed with the row (None: the lease was lost; the runner says so)
        return done["result"]

    def _fold_rate(self, conn: sqlite3.Connection, plan: Plan) -> None:
        """Fold the render's measured rate into its preset's, in the history row's transaction."""
        if plan.rate is None:
            return
        name = str(plan.preset["name"])
        try:
            Costs.fold(name, self.models.arbiter.device, plan.rate)(conn)
        except sqlite3.Error as e:  # a failed estimate update never costs the user the images
            log.warning("could not record the time rate of preset %s: %s", name, e)

    async def _retried(self, job: Job) -> dict | None:
        """On a retry, the result an earlier attempt recorded (a first attempt has none: no read)."""
        return await self._recorded(job) if job.attempts > 1 else None

    async def _recorded(self, job: Job) -> dict | None:
        """The result of an earlier attempt of this job that already wrote its history row, or None."""
        g = await self.store.history.of_job(job.id)
        if g is None:
            return None
        log.info("job %s already recorded generation %s; returning it without regenerating", job.id, g.id)
        return result_of(g.id, dataclasses.asdict(g)).model_dump()
