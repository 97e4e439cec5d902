"""Generation requests: one pydantic model, aspect presets and budget checks with clear errors.

Seeds: image i of a batch uses `seed + i`, so any batch image can be reproduced alone with batch=1.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.config import SafetyPolicy
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.guidance import ControlSpec, ReferenceSpec, check_controls, reference_via
from engine.runtime.diffusion.schedulers import check_scheduler
from engine.runtime.diffusion.weighting import check_weighting

Family = Literal["sd15", "sdxl", "flux", "kontext", "qwen-edit", "qwen-edit-plus", "klein"]  # the last four: edit
FAMILIES: tuple[str, ...] = ("sd15", "sdxl", "flux", "kontext", "qwen-edit", "qwen-edit-plus", "klein")
BASE_SIDE: dict[str, int] = {"sd15": 512, "sdxl": 1024, "flux": 1024, "kontext": 1024, "qwen-edit": 1024,
                             "qwen-edit-plus": 1024, "klein": 1024}
ASPECTS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "4:3": (4, 3),
    "3:4": (3, 4),
}
MAX_SEED = 2**32 - 1  # the one seed bound, on every front (32-bit seeds, as common SD tools use)
PROMPT_MAX_CHARS = 1500  # the one prompt bound
NEGATIVE_MAX_CHARS = 1000


def aspect_size(aspect: str, family: str) -> tuple[int, int]:
    """(width, height) for an aspect preset: at most BASE_SIDE[family]² pixels, both sides multiples of 8."""
    if aspect not in ASPECTS:
        raise InvalidRequest(f"unknown aspect '{aspect}'; choose one of: {', '.join(ASPECTS)}")
    if family not in BASE_SIDE:
        raise InvalidRequest(f"unknown family '{family}'; choose one of: {', '.join(FAMILIES)}")
    aw, ah = ASPECTS[aspect]
    base = BASE_SIDE[family]
    scale = (base * base / (aw * ah)) ** 0.5
    return max(8, int(aw * scale) // 8 * 8), max(8, int(ah * scale) // 8 * 8)


class GenerationRequest(BaseModel):
    """One txt2img / img2img (init_image) / inpaint (init_image + mask_image) request."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = Field(default=25, ge=1)
    cfg: float = Field(default=7.0, ge=0.0, le=30.0)
    scheduler: str = "default"
    seed: int = Field(default_factory=lambda: random.randint(0, 2**32 - 1), ge=0)
    batch: int = Field(default=1, ge=1, le=4)
    strength: float = Field(default=0.75, gt=0.0, le=1.0)
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    edit_images: list[Image.Image] = Field(default_factory=list)  # an edit's other sources, after init_image
    loras: list[tuple[str, float]] = Field(default_factory=list)
    embeddings: list[tuple[str, str]] = Field(default_factory=list)  # (file, token) textual inversions
    vae: str | None = None  # an alternative VAE; None = the pipeline's own
    family: Family = "sd15"
    safety: SafetyPolicy | None = None
    controls: list[ControlSpec] = Field(default_factory=list)
    reference: ReferenceSpec | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the prompt is empty")
        return v

    @field_validator("width", "height")
    @classmethod
    def _side(cls, v: int) -> int:
        if v < 8 or v % 8:
            raise ValueError(f"{v} is not a positive multiple of 8")
        return v

    @field_validator("loras")
    @classmethod
    def _loras(cls, v: list[tuple[str, float]]) -> list[tuple[str, float]]:
        for ref, scale in v:
            if not str(ref).strip():
                raise ValueError("a LoRA reference is empty")
            if not -4.0 <= scale <= 4.0:
                raise ValueError(f"LoRA '{ref}' scale {scale} is outside -4..4")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GenerationRequest:
        check_scheduler(self.scheduler, self.family)
        check_weighting(self.prompt, self.negative, self.family)
        if self.seed + self.batch - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} + batch would exceed {MAX_SEED}")
        if self.mask_image is not None and self.init_image is None:
            raise ValueError("a mask_image needs an init_image to inpaint")
        if self.edit_images and self.init_image is None:
            raise ValueError("edit_images need an init_image (the first source image)")
        check_controls(self.controls)
        if self.reference is not None and self.reference.via != reference_via(self.family):
            raise ValueError(
                f"a {self.reference.via} reference does not fit {self.family}: an IP-Adapter works with sd15 and "
                "sdxl presets, not flux; FLUX takes reference images through Redux"
            )
        if self.init_image is not None and int(self.steps * self.strength) < 1:
            raise ValueError(
                f"steps × strength = {self.steps} × {self.strength} leaves no denoising step; raise one of them"
            )
        return self

    @property
    def guided(self) -> bool:
        """True when ControlNets or a reference image take part (never batched across users)."""
        return bool(self.controls) or self.reference is not None

    @property
    def mode(self) -> str:
        """ "txt2img", "img2img" or "inpaint"."""
        if self.init_image is None:
            return "txt2img"
        return "img2img" if self.mask_image is None else "inpaint"

    def seeds(self) -> list[int]:
        """Per-image seeds: seed, seed+1, ..., seed+batch-1."""
        return [self.seed + i for i in range(self.batch)]

    def params(self) -> dict[str, Any]:
        """The JSON-safe parameters (no images) for metadata and history."""
        data = self.model_dump(exclude={"init_image", "mask_image", "edit_images", "controls", "reference"})
        data["mode"] = self.mode
        if self.edit_images:
            data["source_images"] = 1 + len(self.edit_images)
        if self.controls:
            data["controls"] = [c.params() for c in self.controls]
        if self.reference is not None:
            data["reference"] = self.reference.params()
        data["loras"] = [[r, s] for r, s in self.loras]
        return data


def check_limits(req: GenerationRequest, generation: Any) -> None:
    """Raise InvalidRequest when `req` exceeds the `generation` settings section (pixels, side, steps, batch)."""
    w, h = req.width, req.height
    if max(w, h) > generation.max_side:
        raise InvalidRequest(f"size {w}x{h} exceeds the maximum side of {generation.max_side} px")
    if w * h > generation.max_pixels:
        raise InvalidRequest(f"size {w}x{h} = {w * h} px exceeds the budget of {generation.max_pixels} px")
    if req.steps > generation.max_steps:
        raise InvalidRequest(f"{req.steps} steps exceeds the maximum of {generation.max_steps}")
    if req.batch > generation.max_batch:
        raise InvalidRequest(f"batch {req.batch} exceeds the maximum of {generation.max_batch}")


def short_errors(err: ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def build_request(
    preset: dict[str, Any], generation: Any, *, aspect: str | None = None, **fields: Any
) -> GenerationRequest:
    """Fill a request from an image preset's defaults, an optional aspect preset and overrides; check limits.

    Raises InvalidRequest with a concise message for any problem.
    """
    family = fields.get("family") or preset.get("family", "sd15")
    data: dict[str, Any] = {"family": family}
    for key, pkey in (
        ("scheduler", "scheduler"),
        ("steps", "steps"),
        ("cfg", "cfg"),
        ("negative", "negative"),
    ):
        if preset.get(pkey) is not None:
            data[key] = preset[pkey]
    base = BASE_SIDE.get(family, 512)
    data["width"] = preset.get("width") or base
    data["height"] = preset.get("height") or base
    if aspect is not None:
        data["width"], data["height"] = aspect_size(aspect, family)
    data["loras"] = [tuple(x) for x in preset.get("loras") or []]
    data["embeddings"] = [
        (x["path"], x["token"]) if isinstance(x, dict) else tuple(x) for x in preset.get("embeddings") or []
    ]
    data["vae"] = preset.get("vae") or None
    data.update({k: v for k, v in fields.items() if v is not None})
    try:
        req = GenerationRequest(**data)
    except ValidationError as e:
        raise InvalidRequest(short_errors(e)) from None
    check_limits(req, generation)
    return req
