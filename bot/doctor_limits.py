"""`atelier doctor`'s VRAM-aware limits: per image preset, the largest batch and image that fit on this device."""

from __future__ import annotations

from engine.config import Settings
from engine.jobs.admission import vram_limits
from engine.runtime.arbiter import Arbiter, ArbiterError


def vram_limit_report(settings: Settings, stored: list[tuple[str, dict]]) -> tuple[bool, str, dict]:
    """(ok, one line, {preset: {max_batch, max_side, ...}}) from the presets' footprints and the device's memory."""
    try:
        arbiter = Arbiter(settings.gpu)  # not started: nothing is loaded, so footprints come from the presets
    except (ArbiterError, RuntimeError, ImportError) as e:
        return False, f"cannot size the device: {e}", {}
    data: dict[str, dict] = {}
    parts = []
    for kind, preset in stored:
        if kind != "image":
            continue
        pixels = int(preset.get("width") or 1024) * int(preset.get("height") or 1024)
        lim = vram_limits(arbiter, settings, preset, pixels)
        data[str(preset["name"])] = {
            "max_batch": lim.max_batch, "max_side": lim.max_side,
            "weights_mb": lim.weights_bytes // 2**20, "free_mb": lim.free_bytes // 2**20,
        }  # fmt: skip
        parts.append(f"{lim.preset} ≤{lim.max_batch} img, ≤{lim.max_side}px")
    message = f"{arbiter.device}, {arbiter.budget // 2**20} MiB budget: " + ("; ".join(parts) or "no image presets")
    return True, message, {"presets": data}
