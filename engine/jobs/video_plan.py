"""Which video preset an 'animate' job uses, and what it will render: checked at submission and in the handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config_video import Video
from engine.jobs.payloads_video import AnimatePayload
from engine.runtime.diffusion.video import VideoFamily, check_request, frame_count, video_family


@dataclass(frozen=True)
class ClipShape:
    """Frames, rate and size of a clip, resolved from the request and the preset's family."""

    frames: int
    fps: int
    width: int
    height: int


def video_preset_name(p: AnimatePayload, video: Video) -> str:
    """The request's preset, else video.image_preset for an image (when set), else video.preset."""
    if p.preset:
        return p.preset
    if p.from_image and video.image_preset:
        return video.image_preset
    return video.preset


def _multiple(value: int, step: int) -> int:
    return max(step, value // step * step)


def fit_to_source(size: tuple[int, int], area: int, step: int) -> tuple[int, int]:
    """A frame of about `area` pixels with the source image's aspect, both sides multiples of `step`."""
    w, h = size
    scale = (area / (w * h)) ** 0.5
    return _multiple(int(w * scale), step), _multiple(int(h * scale), step)


def clip_shape(
    p: AnimatePayload, preset: dict[str, Any], fam: VideoFamily, source: tuple[int, int] | None = None
) -> ClipShape:
    """What will be rendered: the request's frames/fps/size, else the family's and preset's defaults.

    An image-to-video request without a size keeps the source's aspect at the preset's area.
    """
    frames = frame_count(p.frames or fam.frames, fam)
    w, h = int(preset.get("width") or 512), int(preset.get("height") or 512)
    if source is not None and p.width is None and p.height is None:
        w, h = fit_to_source(source, w * h, fam.multiple)
    return ClipShape(frames, p.fps or fam.fps, p.width or w, p.height or h)


def admit(name: str, preset: dict[str, Any], p: AnimatePayload) -> VideoFamily:
    """The preset's VideoFamily; InvalidRequest for a family without video, or a clip it cannot render."""
    fam = video_family(str(preset.get("family")), name)
    shape = clip_shape(p, preset, fam)
    check_request(fam, name, image=p.from_image, frames=shape.frames, width=shape.width, height=shape.height)
    return fam
