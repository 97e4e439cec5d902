"""The 'animate' job handler: a short clip from a prompt (or an image) through a video preset, posted as MP4.

Everything is resolved before the model is touched. A clip renderer (engine/jobs/clips.py: here, or on an
`atelier worker` with queue.backend "redis") renders the frames with progress by step and encodes them: MP4
(H.264 when PyAV has it, the prompt and parameters in the container's metadata), re-encoded smaller when over
the upload limit, plus a GIF when it is small. The handler writes outputs/<day>/<job>.mp4 (and .gif) and one
history row records the clip with its parent, if any.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config import Settings
from engine.jobs.clips import Clip, ClipLimits, ClipRenderer, ClipSpec, LocalClips
from engine.jobs.defaults import safety_policy
from engine.jobs.payloads import parse_payload
from engine.jobs.payloads_video import AnimatePayload
from engine.jobs.record import output_folder, result_of
from engine.jobs.runner import Handler, JobContext, JobFailed
from engine.jobs.sources import SourceImages
from engine.jobs.video_plan import admit, clip_shape, video_preset_name
from engine.presets import ImagePreset
from engine.runtime.arbiter import ModelTooLarge
from engine.runtime.diffusion.errors import GenerationFailed, ImageWithheld, InvalidRequest, ModelNotAvailable
from engine.runtime.diffusion.request import short_errors
from engine.runtime.diffusion.video import VideoRequest
from engine.runtime.models import ModelRegistry
from engine.store import Store
from engine.store.jobs import Job
from engine.store.library import UnknownEntry
from engine.video import VideoTooLarge

log = logging.getLogger("atelier.animate")
PERMANENT = (InvalidRequest, GenerationFailed, ModelNotAvailable, ModelTooLarge, ImageWithheld)
DEFAULT_STRENGTH = 0.8


def _write(path: Path, data: bytes) -> str:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomically: a crash never leaves a torn file
    return str(path)


def write_clip(settings: Settings, job: Job, clip: Clip) -> list[str]:
    """outputs/<day>/<job>.mp4, and <job>.gif when the clip has one (blocking)."""
    folder = output_folder(settings, job)
    paths = [_write(folder / f"{job.id}.mp4", clip.mp4)]
    if clip.gif is not None:
        paths.append(_write(folder / f"{job.id}.gif", clip.gif))
    return paths


class AnimateHandler:
    """The handler for 'animate' jobs, with explicit dependencies."""

    def __init__(
        self, store: Store, settings: Settings, models: ModelRegistry, clips: ClipRenderer | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.clips = clips or LocalClips(models)  # a RemoteRenderer with queue.backend "redis"
        self.sources = SourceImages(store.history, settings)

    def handlers(self) -> dict[str, Handler]:
        """{"animate": handler} for JobRunner."""
        return {"animate": self.animate}

    async def _preset(self, name: str, job: Job) -> dict[str, Any]:
        try:
            data = await self.store.presets.resolve("image", name, job.user_id, job.guild_id)
            return ImagePreset.model_validate({k: v for k, v in data.items() if k != "scope"}).model_dump()
        except UnknownEntry as e:
            raise JobFailed(str(e)) from None
        except ValidationError as e:
            raise JobFailed(f"video preset '{name}' is invalid: {short_errors(e)}") from None

    async def _source(self, p: AnimatePayload, job: Job, ctx: JobContext) -> tuple[Any, int | None]:
        """The image to animate and its generation (None for an upload), or (None, None) for text-to-video."""
        if p.source_generation_id is not None:
            g = await self.sources.parent(p.source_generation_id, job)
            return await self.sources.parent_image(g, p.source_index, ctx), g.id
        if p.source_image is not None:
            return await self.sources.read(p.source_image, ctx, "the image to animate"), None
        return None, None

    async def animate(self, job: Job, ctx: JobContext) -> dict:
        """Render the clip, write the MP4 (and GIF) and record one history row."""
        g = await self.store.history.of_job(job.id)
        if g is not None:  # an earlier attempt of this job already recorded its clip
            return result_of(g.id, dataclasses.asdict(g)).model_dump()
        p = parse_payload(AnimatePayload, job.payload, "animate")
        if p.seed is None:
            raise JobFailed(f"job #{job.id} has no seed: jobs are submitted through JobSubmitter")
        try:
            policy = await safety_policy(self.store.settings, job.guild_id, self.settings.generation.safety)
        except ValueError as e:
            raise JobFailed(str(e)) from None
        name = video_preset_name(p, self.settings.video)
        preset = await self._preset(name, job)
        try:
            fam = admit(name, preset, p)
        except InvalidRequest as e:
            raise JobFailed(str(e)) from None
        source, parent_id = await self._source(p, job, ctx)
        shape = clip_shape(p, preset, fam, source.size if source is not None else None)
        req = VideoRequest(
            prompt=p.prompt, negative=p.negative if p.negative is not None else preset["negative"],
            frames=shape.frames, fps=shape.fps, width=shape.width, height=shape.height,
            steps=p.steps or preset["steps"], cfg=p.cfg if p.cfg is not None else preset["cfg"], seed=p.seed,
            image=source, strength=p.strength or DEFAULT_STRENGTH, safety=policy,
        )  # fmt: skip
        params = {**req.params(), "kind": job.kind, "job_id": job.id, "seeds": [p.seed], "video": True}
        meta = {"preset": preset["name"], "model": preset["model"], "parent_id": parent_id, **params}
        clip = await self._render(ClipSpec(preset, req, meta, ClipLimits.of(self.settings)), ctx)
        params |= {"spoilers": [clip.spoiler], "withheld": 0, "reencodes": clip.reencodes}
        row: dict[str, Any] = {
            "user_id": job.user_id, "guild_id": job.guild_id, "channel_id": job.channel_id, "prompt": p.prompt,
            "negative": req.negative, "params": params, "seed": p.seed, "model": preset["model"],
            "preset": preset["name"], "style": "", "parent_id": parent_id,
        }  # fmt: skip
        row["images"] = await ctx.to_thread(write_clip, self.settings, job, clip)
        gen_id, created = await self.store.history.record_for_job(job.id, row)
        if not created and (g := await self.store.history.of_job(job.id)) is not None:
            return result_of(g.id, dataclasses.asdict(g)).model_dump()
        return result_of(gen_id, row).model_dump()

    async def _render(self, spec: ClipSpec, ctx: JobContext) -> Clip:
        """The encoded clip, made here or on a worker; a permanent failure is the job's error."""
        try:
            return await self.clips.clip(spec, ctx)
        except (*PERMANENT, VideoTooLarge) as e:
            raise JobFailed(str(e)) from None
