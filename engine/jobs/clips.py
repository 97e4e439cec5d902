"""A clip's model work and encoding, here (LocalClips) or on an `atelier worker` (engine.remote's RemoteRenderer).

The 'animate' handler resolves everything against the bot's store into a ClipSpec; a clip renderer renders the
frames and encodes them into MP4 bytes under the bot's upload limit (re-encoded there, once) plus a GIF when it
is small, and hands back a Clip. The handler writes the bytes and records the row, whichever backend ran it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from engine.config import Settings
from engine.runtime.diffusion.safety import SPOILER_KEY
from engine.runtime.diffusion.video import VideoRequest
from engine.runtime.models import ModelRegistry
from engine.video import encode_gif, fit_mp4, metadata_tags


@dataclass(frozen=True)
class ClipLimits:
    """The bot's file limits: the MP4's upload limit, the GIF's largest side and size."""

    upload_bytes: int
    gif_max_side: int
    gif_max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> ClipLimits:
        """The limits in `settings` (images.upload_limit_bytes and the video section)."""
        video = settings.video
        return cls(settings.images.upload_limit_bytes, video.gif_max_side, video.gif_max_bytes)


@dataclass(frozen=True)
class ClipSpec:
    """One clip to make: its validated video preset, the request, the container metadata and the file limits."""

    preset: dict[str, Any]
    req: VideoRequest
    meta: dict[str, Any]
    limits: ClipLimits


@dataclass(frozen=True)
class Clip:
    """An encoded clip: MP4 bytes (under the limit), a GIF when small enough, re-encodings, spoiler flag."""

    mp4: bytes
    gif: bytes | None
    reencodes: int
    spoiler: bool


class ClipRenderer(Protocol):
    """Where a clip is made: LocalClips here, RemoteRenderer (engine.remote) on a worker."""

    async def clip(self, spec: ClipSpec, ctx: Any) -> Clip:
        """The encoded clip (raises the engine's errors and VideoTooLarge)."""
        ...


def encode_clip(frames: list[Image.Image], spec: ClipSpec) -> Clip:
    """The frames as MP4 bytes under the upload limit (VideoTooLarge if they cannot be) and a small GIF (blocking)."""
    req, limits = spec.req, spec.limits
    spoiler = bool(frames[0].info.get(SPOILER_KEY))
    tags = metadata_tags(req.prompt, {**spec.meta, "spoilers": [spoiler], "withheld": 0})
    mp4, reencodes = fit_mp4(frames, req.fps, limits.upload_bytes, tags)
    gif = encode_gif(frames, req.fps, limits.gif_max_side)
    small = len(gif) <= min(limits.gif_max_bytes, limits.upload_bytes)
    return Clip(mp4, gif if small else None, reencodes, spoiler)


class LocalClips:
    """Makes clips in this process: the registered VideoModel under the arbiter, then the encoding."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    async def clip(self, spec: ClipSpec, ctx: Any) -> Clip:
        """Render the frames (the model pinned while busy, off the event loop) and encode them."""
        model = await self.models.video_model(await self.models.image_preset(spec.preset))
        async with self.models.arbiter.use(model.name):
            frames = await self.models.arbiter.lane.run(model.render, spec.req, ctx.progress, ctx.should_cancel)
        return await ctx.to_thread(encode_clip, frames, spec)
