"""The payload of an 'animate' job (a short clip from a prompt, or from an image) and its config limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.config_video import Video
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.request import MAX_SEED, NEGATIVE_MAX_CHARS, PROMPT_MAX_CHARS

MIN_FRAMES = 2  # one frame is a still: /imagine makes those
MIN_SIDE = 32


class AnimatePayload(BaseModel):
    """An 'animate' job: text-to-video, or image-to-video from a generation or an uploaded image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]
    negative: Annotated[str, Field(max_length=NEGATIVE_MAX_CHARS)] | None = None
    preset: str | None = None  # a video preset; default video.preset (video.image_preset from an image)
    frames: int | None = None  # default: the preset family's (AnimateDiff 16, Wan 33)
    fps: int | None = None  # default: the family's (AnimateDiff 8, Wan 16)
    width: int | None = None
    height: int | None = None
    steps: Annotated[int, Field(ge=1)] | None = None
    cfg: Annotated[float, Field(ge=0, le=30)] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    source_generation_id: int | None = None
    source_index: Annotated[int, Field(ge=0)] = 0
    source_image: str | None = None  # a file under the data directory
    strength: Annotated[float, Field(gt=0, le=1)] | None = (
        None  # AnimateDiff from an image: how far frames move
    )

    @model_validator(mode="after")
    def _consistent(self) -> AnimatePayload:
        if self.source_generation_id is not None and self.source_image is not None:
            raise ValueError("give source_generation_id or source_image, not both")
        if self.strength is not None and not self.from_image:
            raise ValueError(
                "strength applies to animating an image; give source_generation_id or source_image"
            )
        return self

    @property
    def from_image(self) -> bool:
        """True for image-to-video."""
        return self.source_generation_id is not None or self.source_image is not None


def check_video_limits(p: BaseModel, video: Video) -> None:
    """InvalidRequest for an 'animate' payload over the config's video limits (frames, fps, size)."""
    if not isinstance(p, AnimatePayload):
        return
    if p.frames is not None and not MIN_FRAMES <= p.frames <= video.max_frames:
        raise InvalidRequest(f"frames must be between {MIN_FRAMES} and {video.max_frames}, got {p.frames}")
    if p.fps is not None and not 1 <= p.fps <= video.max_fps:
        raise InvalidRequest(f"fps must be between 1 and {video.max_fps}, got {p.fps}")
    for side, value in (("width", p.width), ("height", p.height)):
        if value is not None and (value % 8 or not MIN_SIDE <= value <= video.max_side):
            raise InvalidRequest(
                f"video {side} must be a multiple of 8 between {MIN_SIDE} and {video.max_side}, got {value}"
            )
    if p.width and p.height and p.width * p.height > video.max_pixels:
        raise InvalidRequest(
            f"{p.width}x{p.height} is over the video limit of {video.max_pixels} pixels per frame"
        )
