"""Terminal commands that work on images: /imagine --control/--reference, /zoom, /pan and /control."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bot.usecases import guided
from bot.usecases.errors import UserError
from bot.usecases.guided import PAN_DIRECTIONS, PAN_FACTOR
from engine.config import Settings
from engine.core import Engine
from engine.images import decode_image, image_limits
from engine.runtime.control import CONTROL_TYPES, MAX_CONTROLS, REFERENCE_MODES, control_type
from engine.runtime.diffusion.errors import InvalidRequest
from tools.sources import save_upload

IMAGINE_OPTIONS = "/imagine takes --control TYPE (up to 3), --reference [style|subject], --draft, --style-code CODE, --best-of N"


@dataclass
class ImagineArgs:
    """/imagine's prompt and its control/reference options."""

    prompt: str
    control: list[str] = field(default_factory=list)
    reference: str | None = None
    draft: bool = False
    style_code: str | None = None
    best_of: int | None = None


def _control(name: str) -> str:
    try:
        return control_type(name)
    except InvalidRequest as e:
        raise UserError(str(e)) from None


def parse_imagine(arg: str) -> ImagineArgs:
    """Split "/imagine" text into the prompt and --control TYPE / --reference [style|subject] options."""
    words, out, i = arg.split(), ImagineArgs(""), 0
    prompt: list[str] = []
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            prompt.append(word)
        else:
            name, _, value = word[2:].partition("=")
            follows = words[i + 1] if i + 1 < len(words) else ""
            if name == "control":
                if not value:
                    if not follows or follows.startswith("--"):
                        raise UserError(f"--control needs a type: {', '.join(CONTROL_TYPES)}")
                    value, i = follows, i + 1
                out.control.append(_control(value))
            elif name == "reference":
                if not value and follows.lower() in REFERENCE_MODES:
                    value, i = follows, i + 1
                out.reference = (value or "subject").lower()
                if out.reference not in REFERENCE_MODES:
                    raise UserError(f"--reference takes {' or '.join(REFERENCE_MODES)}, not '{value}'")
            elif name == "draft":
                out.draft = True
            elif name == "style-code":
                if not value and (not follows or follows.startswith("--")):
                    raise UserError("--style-code needs a code, e.g. --style-code X7K2")
                value, i = (value, i) if value else (follows, i + 1)
                out.style_code = value
            elif name == "best-of":
                value, i = (value, i) if value else (follows, i + 1)
                if not value.isdigit():
                    raise UserError(f"--best-of needs a number of images, e.g. --best-of 4, not '{value}'")
                out.best_of = int(value)
            else:
                raise UserError(f"unknown option {word}; {IMAGINE_OPTIONS}")
        i += 1
    repeated = sorted({c for c in out.control if out.control.count(c) > 1})
    if repeated:
        raise UserError(f"--control {', '.join(repeated)} is given more than once")
    if len(out.control) > MAX_CONTROLS:
        raise UserError(f"at most {MAX_CONTROLS} --control types at once")
    out.prompt = " ".join(prompt)
    return out


async def guided_fields(settings: Settings, args: ImagineArgs, attachments: list[Any]) -> dict[str, Any]:
    """Payload fields for /imagine's --control/--reference, using the first /attach'ed image."""
    if not args.control and args.reference is None:
        return {}
    if not attachments:
        raise UserError("--control and --reference use an attached image: /attach PATH first")
    path = await asyncio.to_thread(save_upload, settings, attachments[0].data)
    fields: dict[str, Any] = {}
    if args.control:
        fields["controls"] = [{"type": kind, "image": path} for kind in args.control]
    if args.reference is not None:
        fields["reference_image"] = path
        fields["reference_mode"] = args.reference
    return fields


def parse_factor(text: str, default: float) -> float:
    """A canvas growth factor from command text (empty = default); UserError outside 1.1-4."""
    if not text:
        return default
    try:
        factor = float(text.lower().removesuffix("x"))
    except ValueError:
        raise UserError(f"the factor must be a number such as 1.5, not '{text}'") from None
    return guided.check_factor(factor)


def parse_pan(arg: str) -> tuple[str, float]:
    """(direction, factor) from "/pan <left|right|up|down> [factor]"."""
    direction, _, rest = arg.strip().lower().partition(" ")
    if direction not in PAN_DIRECTIONS:
        raise UserError(f"usage: /pan <{'|'.join(PAN_DIRECTIONS)}> [factor]")
    return direction, parse_factor(rest.strip(), PAN_FACTOR)


def _save_map(settings: Settings, kind: str, image: Image.Image) -> str:
    data = image.tobytes()
    folder = settings.path("outputs") / "control"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}.png"
    image.save(path, format="PNG")
    return str(path)


def _load(settings: Settings, source: bytes | str) -> Image.Image:
    """Decode attached bytes or an image file (absolute, or under outputs/) with the upload limits."""
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        path = path if path.is_absolute() or path.is_file() else settings.path("outputs") / path
        if not path.is_file():
            raise UserError(f"the image file {source} is missing")
        data = path.read_bytes()
    return decode_image(data, **image_limits(settings.images))


async def control_map(engine: Engine, kind_name: str, source: bytes | str | None) -> str:
    """Run the control preprocessor on an image (attached bytes or a file); return the saved map's path."""
    if not kind_name.strip():
        raise UserError(f"usage: /control <{'|'.join(CONTROL_TYPES)}>")
    kind = _control(kind_name)
    if source is None:
        raise UserError("there is no image to read: /attach PATH first (or make an image)")
    settings = engine.settings
    image = await asyncio.to_thread(_load, settings, source)
    out = await guided.control_map(engine, kind, image)
    return await asyncio.to_thread(_save_map, settings, kind, out)
