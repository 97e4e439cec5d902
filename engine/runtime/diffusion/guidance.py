"""Guidance beyond text: ControlNet control maps and a reference image (IP-Adapter or FLUX Redux), as request parts.

A ControlSpec carries an already-preprocessed control map and a reference to ControlNet weights; the weights
themselves are arbiter clients (engine.runtime.control.controlnet.ControlNetWeights) handed to DiffusionModel.generate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.runtime.control import CONTROL_TYPES, MAX_CONTROLS, control_type

ControlType = Literal[CONTROL_TYPES]  # type: ignore[valid-type]
# a control type as given: aliases such as "pose" become the canonical name before validation
ControlName = Annotated[ControlType, BeforeValidator(lambda v: control_type(v) if isinstance(v, str) else v)]
Via = Literal["ip-adapter", "redux"]
MAX_BLEND = 5  # /blend: reference images mixed into one IP-Adapter embedding (or one set of Redux tokens)


class ControlSpec(BaseModel):
    """One ControlNet: a control map, the ControlNet weights' reference, its scale and active step range."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    type: ControlName
    image: Image.Image
    model: str = Field(min_length=1)
    scale: float = Field(default=1.0, ge=0.0, le=2.0)
    start: float = Field(default=0.0, ge=0.0, le=1.0)
    end: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _range(self) -> ControlSpec:
        check_range(self.type, self.start, self.end)
        return self

    def params(self) -> dict[str, Any]:
        """JSON-safe description (no image): type, model, scale, start and end."""
        return self.model_dump(exclude={"image"})


def check_range(control: str, start: float, end: float) -> None:
    """ValueError unless a control's active range of steps is not empty (start below end)."""
    if start >= end:
        raise ValueError(f"control {control}: start {start} must be below end {end}")


def reference_via(family: str) -> Via:
    """How a family takes reference images: FLUX through a Redux prior, the others through an IP-Adapter."""
    return "redux" if family == "flux" else "ip-adapter"


class ReferenceSpec(BaseModel):
    """A reference image: an IP-Adapter steers the subject (all layers) or only the style (InstantStyle layers);
    on FLUX the Redux prior turns it into prompt tokens (subject only)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    image: Image.Image
    scale: float = Field(default=0.6, ge=0.0, le=1.5)
    mode: Literal["subject", "style"] = "subject"
    via: Via = "ip-adapter"
    # ip-adapter: {"model", "subfolder", "weight", "image_encoder"} (engine.config.IpAdapter); redux: {"model"}
    adapter: dict[str, str]
    others: list[Image.Image] = Field(default_factory=list, max_length=MAX_BLEND - 1)  # /blend: more images
    weights: list[float] = Field(default_factory=list)  # one per image (image first); empty = equal

    @model_validator(mode="after")
    def _blend(self) -> ReferenceSpec:
        n = 1 + len(self.others)
        if self.weights and len(self.weights) != n:
            raise ValueError(f"{len(self.weights)} weights for {n} reference images; give one per image")
        if any(not 0.0 <= w <= 2.0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
            raise ValueError(f"reference weights must be between 0 and 2 and not all 0, got {self.weights}")
        return self

    @model_validator(mode="after")
    def _adapter(self) -> ReferenceSpec:
        needed = ("model", "weight", "image_encoder") if self.via == "ip-adapter" else ("model",)
        missing = [k for k in needed if not self.adapter.get(k)]
        if missing:
            raise ValueError(f"the {self.via} reference lacks {', '.join(missing)}")
        if self.via == "redux" and self.mode == "style":
            raise ValueError("a style-only reference needs an IP-Adapter (sd15, sdxl); FLUX Redux takes the whole image")
        return self

    def params(self) -> dict[str, Any]:
        """JSON-safe description (no image); a blend adds its per-image weights."""
        out: dict[str, Any] = {"mode": self.mode, "scale": self.scale, "via": self.via, "adapter": dict(self.adapter)}
        if self.others:
            out["weights"] = list(self.weights) or [1.0] * (1 + len(self.others))
        return out


def check_controls(controls: list[ControlSpec]) -> None:
    """ValueError when there are too many ControlNets."""
    if len(controls) > MAX_CONTROLS:
        raise ValueError(f"{len(controls)} controls given; at most {MAX_CONTROLS} ControlNets run at once")


def control_kwargs(mode: str, controls: list[ControlSpec], size: tuple[int, int]) -> dict[str, Any]:
    """The ControlNet keyword arguments for a pipeline call (one net: scalars; several: lists)."""
    maps = [c.image.convert("RGB").resize(size, Image.Resampling.LANCZOS) for c in controls]
    one = len(controls) == 1

    def pick(values: list[Any]) -> Any:
        return values[0] if one else values

    key = "image" if mode == "txt2img" else "control_image"
    return {
        key: pick(maps),
        "controlnet_conditioning_scale": pick([c.scale for c in controls]),
        "control_guidance_start": pick([c.start for c in controls]),
        "control_guidance_end": pick([c.end for c in controls]),
    }


def style_layers(unet: Any, scale: float) -> dict[str, Any]:
    """InstantStyle: the reference acts only in the first cross-attention up block (style, not layout)."""
    for i, block in enumerate(unet.up_blocks):
        if getattr(block, "attentions", None):
            return {"up": {f"block_{i}": scale}}
    raise ValueError("this model has no cross-attention up block for a style-only reference")
