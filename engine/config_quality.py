"""Settings sections of the result cache, CLIP scoring and GPU-time costs (kept out of config.py's length)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.config_base import PosFloat, PosInt, Section


class Cache(Section):
    """The seed-aware result cache: an identical request with a user-given seed returns stored images."""

    enabled: bool = Field(True, description="reuse the images of an identical fixed-seed request")
    ttl_s: PosFloat = Field(7 * 24 * 3600.0, description="seconds a cached result stays reusable")
    max_entries: PosInt = Field(10_000, description="most cached results kept; the oldest go first")


class Scoring(Section):
    """CLIP prompt-image similarity of every result, and best-of-N picking."""

    enabled: bool = Field(True, description="score every generated image against its prompt with CLIP")
    clip_model: str = Field(
        "openai/clip-vit-base-patch32",
        description="CLIP model (hub id or folder); demo: presets use the offline tiny CLIP; unavailable = no score",
    )


class Cost(Section):
    """GPU-time estimates (steps × pixels × images × the measured rate of the preset) and per-user caps."""

    default_rate: PosFloat = Field(
        0.05, description="GPU-seconds per step per megapixel per image before a preset's rate is measured"
    )
    max_job_gpu_s: PosFloat = Field(600.0, description="estimated GPU-seconds one request may take")
    max_queued_gpu_s: PosFloat = Field(
        1800.0, description="estimated GPU-seconds of one user's queued and running jobs, this one included"
    )
    vram_headroom: Annotated[float, Field(ge=1.0, le=4.0)] = Field(
        1.2, description="safety factor on the measured activation memory when computing VRAM-aware limits"
    )
