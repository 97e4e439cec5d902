"""Settings section of short video (/animate), kept out of config.py's length."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.config_base import PosInt, Section


class Video(Section):
    """Short clips (/animate): the video presets, the limits of a request and of the files posted."""

    preset: str = Field(
        "animatediff", description="video preset of /animate from text (a video-family preset)"
    )
    image_preset: str = Field(
        "",
        description="video preset of /animate from an image; empty = the text preset (AnimateDiff does both)",
    )
    max_frames: Annotated[int, Field(ge=2, le=257)] = Field(
        48, description="most frames a request may ask for"
    )
    max_fps: Annotated[int, Field(ge=1, le=60)] = Field(
        24, description="highest frame rate a request may ask for"
    )
    max_side: PosInt = Field(1024, description="largest video width or height, in pixels")
    max_pixels: PosInt = Field(1024 * 576, description="largest frame area, in pixels (w × h)")
    gif_max_bytes: PosInt = Field(
        3 * 1024 * 1024, description="a GIF is posted beside the MP4 only when it is at most this many bytes"
    )
    gif_max_side: PosInt = Field(320, description="the GIF's largest side, in pixels")
