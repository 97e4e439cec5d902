"""Settings section of vision auto-tagging (kept out of config.py's length)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.config_base import PosFloat, Section


class AutoTag(Section):
    """Vision auto-tagging: tags for every new image, made only while no user job is queued or running."""

    enabled: bool = Field(
        False, description="tag new images with the vision model in the background (needs a vision preset)"
    )
    idle_poll_s: PosFloat = Field(2.0, description="seconds between checks for idle time and untagged images")
    max_tags: Annotated[int, Field(ge=1, le=24)] = Field(12, description="most tags kept per image")
