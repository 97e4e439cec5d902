"""Structural and reference control: control-image preprocessors, ControlNet weights, IP-Adapter, outpaint.

Names shared by every layer live here so tools and fronts can offer the same choices the engine accepts.
"""

from __future__ import annotations

CONTROL_TYPES: tuple[str, ...] = ("canny", "depth", "openpose", "lineart", "softedge", "scribble")
ALIASES: dict[str, str] = {
    "pose": "openpose",
    "edges": "canny",
    "edge": "canny",
    "lines": "lineart",
    "line": "lineart",
    "sketch": "scribble",
    "hed": "softedge",
    "soft": "softedge",
}
REFERENCE_MODES: tuple[str, ...] = ("subject", "style")
OUTPAINT_DIRECTIONS: tuple[str, ...] = ("all", "left", "right", "up", "down")
MAX_CONTROLS = 3


def control_type(name: str) -> str:
    """The canonical control type for `name` (aliases such as "pose" accepted); InvalidRequest otherwise."""
    from engine.runtime.diffusion.errors import (
        InvalidRequest,  # lazily: engine.runtime.diffusion imports this package
    )

    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CONTROL_TYPES:
        raise InvalidRequest(f"unknown control type '{name}'; choose one of: {', '.join(CONTROL_TYPES)}")
    return key
