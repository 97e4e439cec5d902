"""Front-neutral text about a result's quality and cost: cached, CLIP scores, best-of, ETA, VRAM limits."""

from __future__ import annotations

from collections.abc import Mapping

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
