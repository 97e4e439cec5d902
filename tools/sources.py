"""Where generate's control, reference and outpaint images come from, and the payload fields they become.

Precedence for every image: an explicit *_generation_id > the first image attachment > the replied-to image.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.config import Settings
from engine.images import decode_image, image_limits
from engine.store.history import Generation
from tools.common import usable_generation
from tools.context import Attachment, ToolContext, ToolError

NEEDS_IMAGE = "attach an image or reply to one"
DEFAULT_CONTROL_SCALE = 1.0
DEFAULT_OUTPAINT_FACTOR = 2.0
OUTPAINT_FACTORS = (1.1, 4.0)  # the canvas grows by at least 10 % and at most 4x
NEEDS = {  # argument -> the argument it only makes sense with
    "control_scale": "control",
    "control_generation_id": "control",
    "reference_scale": "reference",
    "reference_generation_id": "reference",
    "outpaint_factor": "outpaint",
}
_VAGUE_WORDS = (
    "zoom zoomed zooming out extend extended expand pan outpaint outpainted uncrop widen wider more canvas"
    " image picture photo pic it this that the a an to of by on in please pls and view frame scene left right"
    " up down top bottom all around sides side direction x times bit little lot some same again further"
    " make do keep"
)
_VAGUE = frozenset(_VAGUE_WORDS.split())


def save_upload(settings: Settings, data: bytes) -> str:
    """Decode uploaded bytes safely (BadImage) and store them as PNG under outputs/uploads; return the path."""
    return store_upload(settings, data, decode_image(data, **image_limits(settings.images)))


def store_upload(settings: Settings, data: bytes, img: Any) -> str:
    """Store an already decoded upload as PNG under outputs/uploads, named by its bytes' digest; return the path."""
    digest = hashlib.sha256(data).hexdigest()[:24]
    folder = settings.path("outputs") / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.png"
    if not path.exists():
        img.save(path, format="PNG")
    return str(path)


def _save_attachment(ctx: ToolContext, att: Attachment) -> str:
    """save_upload for a tool's attachment (blocking: run it in a thread)."""
    return save_upload(ctx.settings, att.data)


def source_prompt(gen: Generation) -> str:
    """The prompt the user gave for a generation (before its style was applied), else the stored prompt."""
    return str(gen.params.get("user_prompt") or gen.prompt)


def image_attachments(ctx: ToolContext) -> list[Attachment]:
    """Attachments that may be images (non-empty, and an image content type when one is given)."""
    return [
        a
        for a in ctx.attachments
        if a.data and (not a.content_type or a.content_type.lower().startswith("image/"))
    ]


def vague_prompt(prompt: str) -> bool:
    """True when a prompt only repeats an instruction ("zoom out 2x", "extend to the right")."""
    words = re.findall(r"[a-z]+", prompt.lower())
    return all(w in _VAGUE for w in words)


@dataclass(frozen=True)
class Source:
    """One resolved image: a generation (id + row) or a saved upload (path); `label` says which for the user."""

    label: str
    generation: Generation | None = None
    image: str | None = None

    def fields(self, id_key: str, path_key: str) -> dict[str, Any]:
        """The payload fields naming this image, e.g. {"source_generation_id": 5} or {"image": path}."""
        if self.generation is not None:
            return {id_key: self.generation.id}
        return {path_key: self.image}


class Sources:
    """Resolves image sources for one generate call; the first image attachment is decoded and saved once."""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self._upload: Source | None = None

    async def resolve(self, explicit_id: int | None, what: str) -> Source:
        """The image for `what` (e.g. "control"); ToolError when there is none the user may use."""
        ctx = self.ctx
        if explicit_id is not None:
            return _with_image(await usable_generation(ctx, explicit_id), f"generation #{explicit_id}")
        images = image_attachments(ctx)
        if images:
            if self._upload is None:
                path = await asyncio.to_thread(_save_attachment, ctx, images[0])
                self._upload = Source(f"attached image {images[0].name[:64]}", image=path)
            return self._upload
        if ctx.replied_generation_id is not None:
            gen = await usable_generation(ctx, ctx.replied_generation_id)
            return _with_image(gen, f"the replied image #{gen.id}")
        raise ToolError(f"{what} needs an image: {NEEDS_IMAGE}")


def _with_image(gen: Generation, label: str) -> Source:
    if not gen.images:
        raise ToolError(f"generation #{gen.id} has no image file")
    return Source(label, generation=gen)


def check_combinations(args: Mapping[str, Any]) -> None:
    """ToolError for arguments that need another one, repeated control types or outpaint with strength."""
    for key, needed in NEEDS.items():
        if args.get(key) is not None and args.get(needed) is None:
            raise ToolError(f"{key} needs {needed}; give {needed} too or leave {key} out")
    control = args.get("control") or []
    repeated = sorted({c for c in control if control.count(c) > 1})
    if repeated:
        raise ToolError(f"control lists {', '.join(repeated)} more than once")
    if args.get("outpaint") is not None:
        if args.get("strength") is not None:
            raise ToolError(
                "strength does not apply to outpaint (the original pixels are kept); leave it out"
            )
        if args.get("aspect") is not None:
            raise ToolError("aspect does not apply to outpaint; the canvas grows by outpaint_factor")


async def control_fields(sources: Sources, args: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """(payload "controls" entries, their summary for the result) for args["control"]."""
    src = await sources.resolve(args.get("control_generation_id"), "control")
    scale = args.get("control_scale")
    scale = DEFAULT_CONTROL_SCALE if scale is None else scale
    entries, shown = [], []
    for kind in args["control"]:
        entries.append({"type": kind, "scale": scale, **src.fields("source_generation_id", "image")})
        shown.append({"type": kind, "scale": scale, "from": src.label})
    return entries, shown


async def reference_fields(sources: Sources, args: Mapping[str, Any]) -> tuple[dict, dict]:
    """(payload reference_* fields, their summary for the result) for args["reference"]."""
    src = await sources.resolve(args.get("reference_generation_id"), "reference")
    fields = {
        "reference_mode": args["reference"],
        "reference_scale": args.get("reference_scale"),
        **src.fields("reference_generation_id", "reference_image"),
    }
    shown = {"mode": args["reference"], "scale": args.get("reference_scale"), "from": src.label}
    return fields, shown
