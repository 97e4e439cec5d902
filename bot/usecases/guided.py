"""Control images, reference images, control-map previews and outpaint (zoom out / pan) for every front."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from bot.usecases.errors import UserError
from bot.usecases.jobs import job_output, job_prompt
from bot.usecases.text import clip
from engine.core import Engine
from engine.images import BadImage, decode_image, image_limits
from engine.runtime.control import CONTROL_TYPES, OUTPAINT_DIRECTIONS, REFERENCE_MODES, control_type
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.managed import ModelNotAvailable
from engine.store.history import Scope
from engine.store.jobs import Job
from tools.sources import OUTPAINT_FACTORS, source_prompt, store_upload

CONTROL_SCALE = (0.0, 2.0)
REFERENCE_SCALE = (0.0, 1.5)
DEFAULT_CONTROL = "canny"
ZOOM_FACTOR = 2.0  # "Zoom out" and /zoom: the canvas doubles on both axes
PAN_FACTOR = 1.5  # a pan arrow and /pan: the canvas grows by half in one direction
PAN_DIRECTIONS = ("left", "right", "up", "down")
OUTPAINT_KINDS = ("generate", "variation")  # upscales are too large to extend again


class Upload(Protocol):
    """An uploaded file as a front gives it (discord.Attachment fits): name, size, and its bytes on demand."""

    filename: str
    size: int

    async def read(self) -> bytes: ...


def _in_range(option: str, value: float | None, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    if value is not None and not lo <= value <= hi:
        raise UserError(f"{option} must be between {lo:g} and {hi:g}, got {value:g}")


def canonical_type(option: str, name: str) -> str:
    """The canonical control type for `name`, or a UserError naming the option and the choices."""
    try:
        return control_type(name)
    except InvalidRequest:
        raise UserError(
            f"{option}: unknown control type '{name}'; choose one of: {', '.join(CONTROL_TYPES)}"
        ) from None


@dataclass(frozen=True)
class Guides:
    """/imagine's control and reference options as a front received them (uploads not stored yet)."""

    control_image: Upload | None = None
    control_type: str | None = None
    control_scale: float | None = None
    reference_image: Upload | None = None
    reference_mode: str | None = None
    reference_scale: float | None = None

    def check(self) -> None:
        """Reject option combinations that cannot work (before anything is downloaded)."""
        if self.control_image is None and (self.control_type is not None or self.control_scale is not None):
            given = "control_type" if self.control_type is not None else "control_scale"
            raise UserError(
                f"{given} needs a control_image: attach the picture whose pose, edges or depth to follow"
            )
        if self.reference_image is None and (self.reference_mode is not None or self.reference_scale is not None):
            given = "reference_mode" if self.reference_mode is not None else "reference_scale"
            raise UserError(
                f"{given} needs a reference_image: attach the picture whose subject or style to reuse"
            )
        if self.control_type is not None:
            canonical_type("control_type", self.control_type)
        if self.reference_mode is not None and self.reference_mode not in REFERENCE_MODES:
            raise UserError(
                f"reference_mode must be one of: {', '.join(REFERENCE_MODES)}; got '{self.reference_mode}'"
            )
        _in_range("control_scale", self.control_scale, CONTROL_SCALE)
        _in_range("reference_scale", self.reference_scale, REFERENCE_SCALE)


async def read_image(engine: Engine, option: str, upload: Upload) -> tuple[bytes, Any]:
    """Size-check, download and safely decode an uploaded image; errors name the option and the file."""
    limit = engine.settings.images.max_input_bytes
    if upload.size > limit:
        raise UserError(
            f"{option}: {upload.filename} is {upload.size / 2**20:.1f} MB; images up to {limit / 2**20:.0f} MB"
        )
    data = await upload.read()
    try:
        img = await asyncio.to_thread(decode_image, data, **image_limits(engine.settings.images))
    except BadImage as e:
        raise UserError(f"{option}: {upload.filename} was refused: {e}") from None
    return data, img


async def save_image(engine: Engine, option: str, upload: Upload) -> str:
    """Store a checked upload as PNG under outputs/uploads (the path a job payload may name)."""
    data, img = await read_image(engine, option, upload)
    return await asyncio.to_thread(store_upload, engine.settings, data, img)


async def imagine_fields(engine: Engine, g: Guides) -> dict:
    """The 'generate' payload fields for /imagine's control and reference options (checked, uploads saved)."""
    g.check()
    out: dict[str, Any] = {}
    if g.control_image is not None:
        kind = canonical_type("control_type", g.control_type or DEFAULT_CONTROL)
        path = await save_image(engine, "control_image", g.control_image)
        scale = 1.0 if g.control_scale is None else float(g.control_scale)
        out["controls"] = [{"type": kind, "image": path, "scale": scale}]
    if g.reference_image is not None:
        out["reference_image"] = await save_image(engine, "reference_image", g.reference_image)
        out["reference_mode"] = g.reference_mode or REFERENCE_MODES[0]
        if g.reference_scale is not None:
            out["reference_scale"] = float(g.reference_scale)
    return out


async def control_map(engine: Engine, kind: str, img: Image.Image) -> Image.Image:
    """The `kind` control map (pose, edges, depth...) of a decoded image; UserError for unknown types or models."""
    kind = canonical_type("type", kind)
    try:
        return await engine.control_preview(kind, img)
    except (ModelNotAvailable, InvalidRequest) as e:
        raise UserError(str(e)) from None


def control_map_text(kind: str, filename: str) -> str:
    """The caption of a control-map preview."""
    return (
        f"Control map · **{kind}** of `{clip(filename, 80)}`\n"
        f"Use it with `/imagine control_image:` (the same picture) `control_type:{kind}`."
    )


def outpaint_factor(direction: str) -> float:
    """Canvas growth of a result button: zoom out doubles, a pan extends by half."""
    return ZOOM_FACTOR if direction == "all" else PAN_FACTOR


def outpaint_payload(source: Job, index: int, direction: str) -> dict:
    """The 'generate' payload that extends image `index` (0-based) of a finished job's generation."""
    if direction not in OUTPAINT_DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; choose one of: {', '.join(OUTPAINT_DIRECTIONS)}")
    if source.state != "done":
        raise UserError(f"job #{source.id} is {source.state}; only finished images can be extended")
    if source.kind not in OUTPAINT_KINDS:
        raise UserError(f"job #{source.id} is an {source.kind}; zoom out and pan work on generations only")
    out = job_output(source)
    if not 0 <= index < len(out.images):
        raise UserError(f"job #{source.id} has no image {index + 1}")
    prompt = job_prompt(source).strip()
    if not prompt:
        raise UserError(f"job #{source.id} has no prompt to extend the picture with")
    return {
        "prompt": prompt,
        "source_generation_id": out.generation_id,
        "source_index": index,
        "outpaint": {"direction": direction, "factor": outpaint_factor(direction)},
    }


def check_factor(factor: float) -> float:
    """A canvas growth factor within OUTPAINT_FACTORS, or a UserError naming the bounds."""
    lo, hi = OUTPAINT_FACTORS
    if not lo <= factor <= hi:
        raise UserError(f"the factor must be between {lo:g} and {hi:g}, got {factor:g}")
    return factor


async def outpaint_generation(
    engine: Engine, user_id: int, generation_id: int | None, direction: str, factor: float
) -> dict[str, Any]:
    """The 'generate' payload that extends one of the user's generations (its own prompt) in `direction`."""
    if direction not in OUTPAINT_DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; choose one of: {', '.join(OUTPAINT_DIRECTIONS)}")
    if generation_id is None:
        raise UserError("there is no image to extend yet: make one first")
    gen = await engine.store.history.get(generation_id, Scope(user_id))
    if gen is None:
        raise UserError(f"generation #{generation_id} is gone")
    return {
        "prompt": source_prompt(gen),
        "source_generation_id": gen.id,
        "outpaint": {"direction": direction, "factor": check_factor(factor)},
    }
