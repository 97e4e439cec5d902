"""Job payloads of the generation handlers (validated with pydantic) and small pure helpers."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.config import Generation
from engine.jobs.payloads_video import AnimatePayload
from engine.jobs.runner import JobFailed
from engine.runtime.control import MAX_CONTROLS, OUTPAINT_DIRECTIONS, REFERENCE_MODES
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.guidance import ControlName, check_range
from engine.runtime.diffusion.request import (
    ASPECTS,
    MAX_SEED,
    NEGATIVE_MAX_CHARS,
    PROMPT_MAX_CHARS,
    short_errors,
)

Text = Annotated[str, Field(max_length=NEGATIVE_MAX_CHARS)]
Index = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Strength = Annotated[float, Field(gt=0, le=1)]
Count = Annotated[int, Field(ge=1, le=4)]
MAX_EDIT_SOURCES = 4  # the most source images any edit family takes (klein; the family's own limit is checked too)
P = TypeVar("P", bound=BaseModel)


class ControlPayload(BaseModel):
    """One ControlNet of a 'generate' job: a control source image (upload or generation) and its weighting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: ControlName
    image: str | None = None  # a file under the data directory
    source_generation_id: int | None = None
    source_index: Index = 0
    scale: Annotated[float, Field(ge=0, le=2)] = 1.0
    start: Annotated[float, Field(ge=0, le=1)] = 0.0
    end: Annotated[float, Field(ge=0, le=1)] = 1.0
    preprocess: bool = True  # False: the image already is a control map (e.g. a pose skeleton)

    @model_validator(mode="after")
    def _consistent(self) -> ControlPayload:
        if (self.image is None) == (self.source_generation_id is None):
            raise ValueError(f"control {self.type} needs exactly one of image or source_generation_id")
        check_range(self.type, self.start, self.end)
        return self


class OutpaintPayload(BaseModel):
    """Extend the source image's canvas in a direction ("all" = zoom out) by a factor, filled by inpainting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    direction: Literal[OUTPAINT_DIRECTIONS] = "all"  # type: ignore[valid-type]
    factor: Annotated[float, Field(ge=1.1, le=4.0)] = 2.0


class SharedStyle(BaseModel):
    """A style code's snapshot, set by JobSubmitter only: the shared style and/or image preset it expands to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    style: dict[str, str] | None = None  # label, content, negative of the shared style
    preset: dict[str, Any] | None = None  # the shared image preset's fields, with its name


class GeneratePayload(BaseModel):
    """A 'generate' job: txt2img, or img2img/inpaint from a source generation or an uploaded image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]
    negative: Text | None = None  # literal text, or the label of a negative set in the library
    preset: str | None = None
    style: str | None = None  # "" = no style, even if the preset or the user's settings name one
    aspect: str | None = None
    width: int | None = None
    height: int | None = None
    steps: Annotated[int, Field(ge=1)] | None = None
    cfg: float | None = None
    scheduler: str | None = None
    count: Count | None = None  # default: the user's saved count, else 1
    seed: Seed | None = None
    strength: Strength | None = None
    source_generation_id: int | None = None
    source_index: Index = 0
    source_image: str | None = None  # a file under the data directory
    mask: str | None = None  # a file under the data directory; white = repaint
    loras: list[tuple[str, float]] | None = None
    controls: Annotated[list[ControlPayload], Field(max_length=MAX_CONTROLS)] = []
    reference_image: str | None = None  # a file under the data directory
    reference_generation_id: int | None = None
    reference_index: Index = 0
    reference_scale: Annotated[float, Field(ge=0, le=1.5)] | None = None
    reference_mode: Literal[REFERENCE_MODES] = "subject"  # type: ignore[valid-type]
    blend_images: Annotated[list[str], Field(max_length=4)] = []  # /blend: more reference files (uploads)
    reference_weights: list[Annotated[float, Field(ge=0, le=2)]] | None = None  # one per reference image
    outpaint: OutpaintPayload | None = None
    edit: bool = False  # the prompt is an instruction that edits the source (generation.edit_preset)
    # an edit's other source images (uploads), in order after the source: "put this logo on the mug"
    edit_images: Annotated[list[str], Field(max_length=MAX_EDIT_SOURCES - 1)] = []
    draft: bool | None = None  # a fast draft with generation.draft_preset; None = the user's saved setting
    best_of: Count | None = None  # draw this many and order them by CLIP score, the best first
    seed_fixed: bool = False  # set by JobSubmitter: the requester gave the seed (only then the cache may answer)
    style_code: str | None = None  # a shared style code; JobSubmitter expands it into `shared` (style/preset)
    shared: SharedStyle | None = None  # set by JobSubmitter from style_code, never taken from a request

    @model_validator(mode="after")
    def _consistent(self) -> GeneratePayload:
        refs = (self.reference_image is not None or self.reference_generation_id is not None) + len(self.blend_images)
        if self.blend_images and refs == len(self.blend_images):
            raise ValueError("blend_images need a first reference (reference_image or reference_generation_id)")
        if self.reference_weights is not None and len(self.reference_weights) != refs:
            raise ValueError(f"{len(self.reference_weights)} reference_weights for {refs} reference image(s)")
        if self.reference_weights is not None and not sum(self.reference_weights) > 0:
            raise ValueError("reference_weights must not all be 0")
        if self.reference_image is not None and self.reference_generation_id is not None:
            raise ValueError("give reference_image or reference_generation_id, not both")
        if self.outpaint is not None and self.source_generation_id is None and self.source_image is None:
            raise ValueError("outpaint needs a source image (source_generation_id or source_image)")
        if self.outpaint is not None and self.mask is not None:
            raise ValueError("outpaint makes its own mask; leave mask out")
        if self.source_generation_id is not None and self.source_image is not None:
            raise ValueError("give source_generation_id or source_image, not both")
        if self.mask is not None and self.source_generation_id is None and self.source_image is None:
            raise ValueError("a mask needs a source image (source_generation_id or source_image)")
        if self.aspect is not None and (self.width is not None or self.height is not None):
            raise ValueError("give aspect or width/height, not both")
        if self.edit:
            check_edit_payload(self)
        elif self.edit_images:
            raise ValueError("edit_images are the other source images of an edit; set edit too")
        return self


def check_edit_payload(p: GeneratePayload) -> None:
    """ValueError for an instruction edit without a source image, or with guidance it cannot take."""
    if p.source_generation_id is None and p.source_image is None:
        raise ValueError("an edit needs a source image (source_generation_id or source_image)")
    if p.outpaint is not None or p.controls or p.reference_image or p.reference_generation_id is not None:
        raise ValueError("an edit takes no outpaint, control or reference image")
    if p.draft:
        raise ValueError("an edit cannot be a draft")
    if p.mask is not None and p.edit_images:
        raise ValueError("a masked edit takes one source image; leave the mask out to edit from several")


class VariationPayload(BaseModel):
    """A 'variation' job: img2img of a generation's image with its parameters and a new seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    generation_id: int
    index: Index = 0
    strength: Strength = 0.6
    seed: Seed | None = None
    count: Count = 1


class UpscalePayload(BaseModel):
    """An 'upscale' job: 2x/4x of one image of a generation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    generation_id: int
    index: Index = 0
    factor: Literal[2, 4] = 2
    strength: Strength = 0.3
    steps: Annotated[int, Field(ge=1)] | None = None  # default: the parent's, at least 1/strength
    seed: Seed | None = None  # default: the seed of the image being upscaled


PAYLOADS: dict[str, type[BaseModel]] = {
    "generate": GeneratePayload,
    "variation": VariationPayload,
    "upscale": UpscalePayload,
    "animate": AnimatePayload,
}


def check_limits(p: BaseModel, gen: Generation) -> None:
    """InvalidRequest for values over the config's limits (generation.max_batch, max_steps, max_side...)."""
    count = getattr(p, "count", None)
    if count is not None and count > gen.max_batch:
        raise InvalidRequest(f"count {count} is over this server's limit of {gen.max_batch} images")
    steps = getattr(p, "steps", None)
    if steps is not None and steps > gen.max_steps:
        raise InvalidRequest(f"steps {steps} is over the limit of {gen.max_steps}")
    if not isinstance(p, GeneratePayload):
        return
    if p.aspect is not None and p.aspect not in ASPECTS:
        raise InvalidRequest(f"unknown aspect '{p.aspect}'; choose one of: {', '.join(ASPECTS)}")
    for side, value in (("width", p.width), ("height", p.height)):
        if value is not None and (value % 8 or not 64 <= value <= gen.max_side):
            raise InvalidRequest(f"{side} must be a multiple of 8 between 64 and {gen.max_side}, got {value}")
    if p.width and p.height and p.width * p.height > gen.max_pixels:
        raise InvalidRequest(f"{p.width}x{p.height} is over the {gen.max_pixels} pixel limit")


def parse_payload(model: type[P], payload: dict, kind: str) -> P:
    """Load a stored job payload (validated when it was submitted); JobFailed naming each bad field."""
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise JobFailed(f"invalid {kind} request: {short_errors(e)}") from None


def fit_size(size: tuple[int, int], area: int) -> tuple[int, int]:
    """Scale (w, h) down to at most `area` pixels, keeping the aspect; both sides multiples of 8."""
    w, h = size
    scale = min(1.0, math.sqrt(area / (w * h)))
    return max(8, int(w * scale) // 8 * 8), max(8, int(h * scale) // 8 * 8)


def first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
