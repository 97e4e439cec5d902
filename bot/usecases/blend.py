"""/blend for every front: two to five images mixed into one, with a weight per image, through an IP-Adapter
(sd15, sdxl) or a FLUX Redux prior (flux presets that name one)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from bot.usecases import account
from bot.usecases.errors import UserError
from bot.usecases.guided import Upload, save_image
from engine.config import Settings
from engine.core import Engine
from engine.images import BadImage
from engine.runtime.diffusion.guidance import MAX_BLEND
from tools.context import Attachment
from tools.sources import save_upload

MIN_BLEND = 2
WEIGHT_RANGE = (0.0, 2.0)
BLEND_SCALE = 1.0  # the reference steers fully: a blend is made of its images, the prompt only nudges
BLEND_PROMPT = "a seamless blend of the reference images"
_ASKS = re.compile(
    r"\b(blend|merge|mix|combine|fuse|mash\s*up|mashup)\b.{0,30}\b(these|them|those|the|both|all|images?|pictures?"
    r"|photos?|pics?|two|three|four|five)\b|^\s*/?blend\b",
    re.IGNORECASE,
)


def asks_to_blend(text: str) -> bool:
    """True when a message asks to blend its images ("blend these", "merge both pictures")."""
    return bool(_ASKS.search(text or ""))


def check_count(n: int) -> None:
    """UserError unless there are MIN_BLEND..MAX_BLEND images."""
    if n < MIN_BLEND:
        raise UserError(f"blend needs {MIN_BLEND} to {MAX_BLEND} images; got {n}. Attach at least one more")
    if n > MAX_BLEND:
        raise UserError(f"blend takes at most {MAX_BLEND} images; got {n}")


def parse_weights(text: str | None, n: int) -> list[float]:
    """'1,0.5' for n images: one weight per image, missing ones 1; UserError naming the bad part."""
    parts = [p.strip() for p in (text or "").replace(";", ",").split(",")] if text and text.strip() else []
    if len(parts) > n:
        raise UserError(f"{len(parts)} weights for {n} images; give at most one weight per image")
    lo, hi = WEIGHT_RANGE
    out: list[float] = []
    for i, part in enumerate(parts, 1):
        try:
            w = float(part)
        except ValueError:
            raise UserError(f"weight {i} ('{part}') is not a number; write weights like 1,0.5") from None
        if not lo <= w <= hi:
            raise UserError(f"weight {i} must be between {lo:g} and {hi:g}, got {w:g}")
        out.append(w)
    out += [1.0] * (n - len(out))
    if sum(out) <= 0:
        raise UserError("the weights are all 0; give at least one image some weight")
    return out


async def blend_payload(
    engine: Engine,
    paths: Sequence[str],
    *,
    user_id: int,
    guild_id: int,
    weights: str | None = None,
    prompt: str | None = None,
    preset: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
) -> dict:
    """The 'generate' payload that blends stored images (first one is the main reference); the submission
    refuses a preset that takes no reference images."""
    check_count(len(paths))
    w = parse_weights(weights, len(paths))
    payload = await account.imagine_payload(
        engine, user_id=user_id, guild_id=guild_id, prompt=(prompt or "").strip() or BLEND_PROMPT,
        preset=preset, aspect=aspect, seed=seed, count=1,
    )  # fmt: skip
    first, *rest = paths
    return payload | {
        "reference_image": first, "blend_images": list(rest), "reference_weights": w, "reference_scale": BLEND_SCALE,
    }  # fmt: skip


async def save_uploads(engine: Engine, uploads: Sequence[Upload]) -> list[str]:
    """Check the count, then size-check, decode and store each upload; errors name the option (image1...)."""
    check_count(len(uploads))
    return [await save_image(engine, f"image{i}", u) for i, u in enumerate(uploads, 1)]


def _store(settings: Settings, att: Attachment) -> str:
    try:
        return save_upload(settings, att.data)
    except BadImage as e:
        raise UserError(f"{att.name} was refused: {e}") from None


async def save_attachments(settings: Settings, attachments: Sequence[Attachment]) -> list[str]:
    """Store chat attachments (already checked at the door) as blend images."""
    check_count(len(attachments))
    return [await asyncio.to_thread(_store, settings, a) for a in attachments]


def blend_text(job_id: int, n: int, weights: Sequence[float]) -> str:
    """The line a front shows while the blend is queued."""
    shown = ", ".join(f"{w:g}" for w in weights)
    return f"Blending {n} images (weights {shown}) · job #{job_id}"
