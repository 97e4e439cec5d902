"""Front-neutral text about a result's quality and cost: cached, CLIP scores, best-of, ETA, VRAM limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.usecases.animate import clip_notes
from engine.core import Engine
from engine.jobs.admission import eta, vram_limits
from engine.store.library import UnknownEntry


def result_notes(params: Mapping[str, object]) -> str:
    """'cached · best of 4 · CLIP 31.2 (best), 28.0, …' for a result's params ('' when there is nothing)."""
    notes = []
    if params.get("cached"):
        notes.append(f"♻️ cached (from generation #{params.get('cached_from')})")
    scores = params.get("clip_scores")
    if params.get("best_of"):
        notes.append(f"best of {params['best_of']} by CLIP score")
    if isinstance(scores, list) and scores:
        shown = ", ".join(f"{s:.1f}" for s in scores[:4])
        notes.append(f"CLIP {shown}")
    if clip := clip_notes(params):
        notes.append(clip)
    return " · ".join(notes)


def eta_line(own: float | None, ahead: float) -> str:
    """'≈ 12 GPU-s · starts in ≈ 30 s' ('' when the job was not estimated)."""
    if own is None:
        return ""
    start = f" · starts in ≈ {ahead:.0f} s" if ahead >= 0.5 else ""
    return f"≈ {own:.1f} GPU-s{start}"


async def eta_text(engine: Engine, job_id: int) -> str:
    """The estimate and queue ETA of a job, for progress messages."""
    own, ahead = await eta(engine.store, job_id, engine.runner.concurrency)
    return eta_line(own, ahead)


def ranked_images(images: Sequence[str], params: Mapping[str, object]) -> list[str]:
    """A best-of result's images, best first, each with its CLIP score; other results' paths as they are."""
    scores = params.get("clip_scores")
    if not params.get("best_of") or not isinstance(scores, list) or len(scores) != len(images):
        return list(images)
    pairs = enumerate(zip(images, scores, strict=True))
    return [f"{path} · CLIP {score:.1f}{' (best)' if i == 0 else ''}" for i, (path, score) in pairs]


def queued_line(job_id: int, position: int | None, note: str = "", started: bool = False) -> str:
    """'Job #12 queued — position 2 in the queue · ≈ 3.1 GPU-s · starts in ≈ 5 s' (or 'Job #12 started · …')."""
    where = f"position {position} in the queue" if position else "waiting for a worker"
    head = f"Job #{job_id} started" if started else f"Job #{job_id} queued — {where}"
    return head + (f" · {note}" if note else "")


async def queued_text(engine: Engine, job_id: int) -> str:
    """The job-queued line of a front that prints lines: its queue position, GPU-time estimate and queue ETA."""
    position = await engine.jobs.position(job_id)
    job = await engine.jobs.get(job_id) if position is None else None
    started = job is not None and job.state != "queued"
    return queued_line(job_id, position, await eta_text(engine, job_id), started)


async def vram_text(engine: Engine, user_id: int = 0, guild_id: int = 0, names: list[str] | None = None) -> str:
    """Per preset: the largest batch and image that fit in this device's memory."""
    lines = []
    stored = await engine.store.presets.list("image", user_id, guild_id) if names is None else None
    for name in names if names is not None else [str(p["name"]) for p in stored or []]:
        try:
            preset = await engine.store.presets.resolve("image", name, user_id, guild_id)
        except UnknownEntry:
            continue
        pixels = int(preset.get("width") or 1024) * int(preset.get("height") or 1024)
        lines.append("• " + vram_limits(engine.arbiter, engine.settings, preset, pixels).text())
    return "**Memory limits on this device**\n" + ("\n".join(lines) or "no image presets")
