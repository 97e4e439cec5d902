"""Message text and files: 2000-char splitting, progress lines, result captions, upload-size fitting."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.usecases.quality import queued_line
from bot.usecases.text import clip
from engine.video import VideoTooLarge, shrink_mp4

DISCORD_MAX_CHARS = 2000
FENCE = "```"


def _cut_at(text: str, limit: int) -> int:
    """Best index <= limit to cut at: paragraph, line, then word boundary; else a hard cut."""
    for sep in ("\n\n", "\n", " "):
        i = text.rfind(sep, 0, limit + 1)
        if i > limit // 3:
            return i
    return limit


def split_text(text: str, limit: int = DISCORD_MAX_CHARS) -> list[str]:
    """Split text into chunks of at most `limit` chars, keeping ``` code fences balanced per chunk."""
    if limit < 20:
        raise ValueError(f"split limit must be at least 20 characters, got {limit}")
    text = text.strip()
    if not text:
        return []
    chunks: list[str] = []
    reopen = ""
    while text:
        room = limit - len(reopen)
        if len(text) <= room:
            piece, text = text, ""
        else:
            at = _cut_at(text, room - len(FENCE) - 1)
            piece, text = text[:at].rstrip(), text[at:].lstrip("\n ")
        piece = reopen + piece
        reopen = ""
        if piece.count(FENCE) % 2:
            piece += "\n" + FENCE
            reopen = FENCE + "\n"
        chunks.append(piece)
    return chunks


def bar(fraction: float, width: int = 12) -> str:
    """A text progress bar such as ▰▰▰▱▱▱."""
    done = max(0, min(width, round(fraction * width)))
    return "▰" * done + "▱" * (width - done)


@dataclass
class ProgressState:
    """What a job's progress message shows."""

    job_id: int
    label: str = ""
    position: int | None = None
    step: int = 0
    total: int = 0
    running: bool = False
    note: str = ""  # the GPU-time estimate and queue ETA


def progress_text(s: ProgressState) -> str:
    """'Queued — position N' or 'Drawing … 40% (step 8/20)'."""
    head = f"**{s.label}**\n" if s.label else ""
    if not s.running:
        return f"{head}⏳ {queued_line(s.job_id, s.position, s.note)}"
    if s.total <= 0:
        return f"{head}🎨 Job #{s.job_id} starting…"
    pct = int(100 * s.step / s.total)
    return f"{head}🎨 Job #{s.job_id} {bar(s.step / s.total)} {pct}% (step {s.step}/{s.total})"


def result_text(job_id: int, kind: str, prompt: str, seeds: list[int], owner_id: int) -> str:
    """The caption of a finished job's message (one line per image seed)."""
    kinds = {"generate": "", "variation": "Variation · ", "upscale": "Upscale · ", "animate": "🎬 "}
    what = kinds.get(kind, f"{kind} · ")
    seed_txt = ", ".join(str(s) for s in seeds) if seeds else "?"
    line = f"{what}**{clip(prompt, 1500)}**" if prompt else what.rstrip(" ·") or "Result"
    return f"{line}\n<@{owner_id}> · job #{job_id} · seed {seed_txt}"


def failure_text(job_id: int, state: str, error: str | None) -> str:
    """The message for a failed or cancelled job."""
    if state == "cancelled":
        return f"🚫 Job #{job_id} was cancelled."
    return f"❌ Job #{job_id} failed: {clip(error or 'unknown error', 1800)}"


class UploadTooLarge(ValueError):
    """An image that cannot be brought under the upload limit."""


def fit_upload(data: bytes, limit: int, filename: str) -> tuple[bytes, str]:
    """Return (bytes, filename) under `limit`: as is, else re-encoded as JPEG, then downscaled (blocking)."""
    if len(data) <= limit:
        return data, filename
    if filename.endswith(".mp4"):  # a clip: a lower bitrate, then a smaller size
        try:
            return shrink_mp4(data, limit), filename
        except VideoTooLarge as e:
            raise UploadTooLarge(str(e)) from None
    img = Image.open(io.BytesIO(data)).convert("RGB")
    stem = Path(filename).stem
    quality = 90
    for _ in range(12):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality, optimize=True)
        if buf.tell() <= limit:
            return buf.getvalue(), f"{stem}.jpg"
        if quality > 70:
            quality -= 10
        else:
            w, h = img.size
            if min(w, h) <= 16:
                break
            img = img.resize((max(1, int(w * 0.75)), max(1, int(h * 0.75))), Image.Resampling.LANCZOS)
    raise UploadTooLarge(f"{filename} could not be shrunk under {limit} bytes")


def png_of(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes (blocking)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def followups_text(fixes: list[str], limit: int = 5) -> str:
    """Numbered suggestion lines that the Fix buttons refer to."""
    return "\n".join(f"**{i}.** {clip(f, 300)}" for i, f in enumerate(fixes[:limit], 1))


def parse_followup(content: str, index: int) -> str | None:
    """Suggestion `index` back from a message rendered with followups_text."""
    prefix = f"**{index}.** "
    for line in content.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None
