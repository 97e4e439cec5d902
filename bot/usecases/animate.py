"""/animate for every front: the 'animate' job payload (text, or an image to animate) and the words around it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from bot.usecases.errors import UserError
from engine.config import Settings
from engine.images import BadImage
from tools.context import Attachment
from tools.sources import save_upload

OPTIONS = "/animate takes --frames N, --fps N and --seed N before or after the prompt"


def animate_payload(
    prompt: str, *, image: str | None = None, generation_id: int | None = None, frames: int | None = None,
    fps: int | None = None, seed: int | None = None, preset: str | None = None,
) -> dict[str, object]:  # fmt: skip
    """The 'animate' payload (the engine validates it once, at submission)."""
    text = (prompt or "").strip()
    if not text:
        raise UserError("/animate needs a prompt: what should happen in the clip?")
    payload: dict[str, object] = {"prompt": text}
    optional = {"source_image": image, "source_generation_id": generation_id, "frames": frames, "fps": fps,
                "seed": seed, "preset": preset}  # fmt: skip
    payload |= {k: v for k, v in optional.items() if v is not None}
    return payload


async def save_attachment(settings: Settings, att: Attachment) -> str:
    """Store an attached image to animate (decoded and re-saved); UserError for anything that is not an image."""
    try:
        return await asyncio.to_thread(save_upload, settings, att.data)
    except BadImage as e:
        raise UserError(f"{att.name} cannot be animated: {e}") from None


def parse_animate(arg: str) -> tuple[str, dict[str, int]]:
    """(prompt, {frames, fps, seed}) from "/animate [--frames N] [--fps N] [--seed N] PROMPT"."""
    words, options, prompt = arg.split(), {}, []
    i = 0
    while i < len(words):
        name, _, value = words[i].partition("=")
        if name in ("--frames", "--fps", "--seed"):
            if not value:
                if i + 1 >= len(words):
                    raise UserError(f"{name} needs a number, e.g. {name} 16")
                value, i = words[i + 1], i + 1
            if not value.isdigit():
                raise UserError(f"{name} needs a whole number, got '{value}'")
            options[name[2:]] = int(value)
        elif words[i].startswith("--"):
            raise UserError(f"unknown option {words[i]}; {OPTIONS}")
        else:
            prompt.append(words[i])
        i += 1
    return " ".join(prompt), options


def animate_label(from_image: bool) -> str:
    """The line shown above the progress while a clip renders."""
    return "🎬 Animating your image" if from_image else "🎬 Making a short video"


def clip_notes(params: Mapping[str, object]) -> str:
    """'16 frames at 8 fps · 512×512 · re-encoded to fit' for a clip's params ('' for images)."""
    if not params.get("video"):
        return ""
    notes = [
        f"{params.get('frames')} frames at {params.get('fps')} fps",
        f"{params.get('width')}×{params.get('height')}",
    ]
    if params.get("reencodes"):
        notes.append("re-encoded smaller to fit the upload limit")
    return " · ".join(notes)
