"""Typed image and LLM presets (shipped in prompts/presets.toml, saved per user/guild in the store)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.runtime.llm.presets import LlmPreset as RuntimeLlmPreset

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Family = Literal[
    "sd15", "sdxl", "flux", "kontext", "qwen-edit", "qwen-edit-plus", "klein",  # the last four edit
    "animatediff", "wan", "wan-i2v",  # video (engine.runtime.diffusion.video)
]  # fmt: skip


class LoraRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Annotated[str, Field(min_length=1, max_length=500)]
    scale: Annotated[float, Field(ge=-2.0, le=2.0)] = 1.0


class EmbeddingRef(BaseModel):
    """A textual-inversion embedding file and the prompt token it is bound to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Annotated[str, Field(min_length=1, max_length=500)]
    token: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]


class ImagePreset(BaseModel):
    """What to draw with: model, family and default sampling settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    model: Annotated[str, Field(min_length=1, max_length=500)]
    family: Family
    scheduler: str = "default"
    steps: Annotated[int, Field(ge=1, le=200)] = 25
    cfg: Annotated[float, Field(ge=0.0, le=30.0)] = 7.0
    width: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 512
    height: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 512
    negative: str = ""  # a negative-set label from the library, or literal text
    style: str = ""
    loras: tuple[LoraRef, ...] = ()
    embeddings: tuple[EmbeddingRef, ...] = ()  # write the token in a prompt or negative to use one
    vae: Annotated[str, Field(max_length=500)] | None = None  # an alternative VAE (path or hub id)
    safety_checker: str | None = None  # a path or hub id; None = the CompVis checker
    motion_adapter: Annotated[str, Field(max_length=500)] | None = None  # animatediff: the MotionAdapter
    redux: Annotated[str, Field(max_length=500)] | None = None  # flux: the FLUX Redux prior (reference images, /blend)
    vram_mb: Annotated[int, Field(ge=0)] | None = None  # peak GPU memory at the default size (doctor's advice)
    description: Annotated[str, Field(max_length=300)] = ""


class LlmPreset(RuntimeLlmPreset):
    """A stored LLM preset: the runtime fields (engine.runtime.llm.presets) with stricter bounds, plus `role`.

    `model`/`mmproj`: a path (relative ones under paths.models), a file name in `repo` (Hugging Face),
    or "pkg:DIST/relpath" for a file shipped inside an installed Python distribution.
    """

    name: Name
    model: Annotated[str, Field(min_length=1, max_length=500)]
    n_ctx: Annotated[int, Field(ge=512, le=131072)] = 4096
    role: Literal["agent", "vision", "both"] = "agent"
    vram_mb: Annotated[int, Field(ge=0)] | None = None  # GPU memory with all layers offloaded (doctor's advice)
