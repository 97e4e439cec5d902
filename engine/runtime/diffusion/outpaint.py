"""Outpaint / zoom-out planning: grow the canvas, pre-fill the new area, build the inpaint mask, restore pixels.

Pure PIL/numpy. `plan_outpaint` builds the init image + mask for an inpaint pipeline; `restore` pastes the
original back over the result wherever the mask kept it (and feathers the overlap band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from engine.runtime.control import OUTPAINT_DIRECTIONS
from engine.runtime.diffusion.errors import InvalidRequest

MIN_FACTOR = 1.1
MAX_FACTOR = 4.0
NOISE_STD = 6.0  # grey levels of deterministic noise added to the pre-filled area
# (grows width, grows height) per direction
_GROWS = {
    "all": (True, True),
    "left": (True, False),
    "right": (True, False),
    "up": (False, True),
    "down": (False, True),
}


@dataclass(frozen=True)
class OutpaintPlan:
    """Everything an inpaint call and `restore` need.

    box is (left, top, right, bottom) of the placed original on the canvas (PIL box convention); bands are the
    overlap widths (left, top, right, bottom) masked just inside the original's edges (0 where no new area).
    """

    canvas: Image.Image
    mask: Image.Image
    box: tuple[int, int, int, int]
    original: Image.Image
    scale: float
    bands: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def size(self) -> tuple[int, int]:
        """Canvas (width, height)."""
        return self.canvas.size


def _check(direction: str, factor: float, max_pixels: int, max_side: int, overlap: int) -> str:
    key = str(direction).strip().lower()
    if key not in OUTPAINT_DIRECTIONS:
        choices = ", ".join(OUTPAINT_DIRECTIONS)
        raise InvalidRequest(f"unknown outpaint direction '{direction}'; choose one of: {choices}")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor):
        raise InvalidRequest(
            f"outpaint factor must be a number from {MIN_FACTOR} to {MAX_FACTOR}, got {factor!r}"
        )
    if not MIN_FACTOR <= factor <= MAX_FACTOR:
        raise InvalidRequest(f"outpaint factor must be from {MIN_FACTOR} to {MAX_FACTOR}, got {factor:g}")
    if max_pixels < 64 or max_side < 8:
        raise InvalidRequest(f"outpaint budget too small (max_pixels={max_pixels}, max_side={max_side})")
    if overlap < 0:
        raise InvalidRequest(f"outpaint overlap must be 0 or more pixels, got {overlap}")
    return key


def _ceil8(n: int) -> int:
    return -(-n // 8) * 8


def _canvas_side(side: int, factor: float, grows: bool) -> int:
    """A multiple of 8 that holds `side`; when growing, the nearest multiple of 8 to side*factor (and > side)."""
    if not grows:
        return _ceil8(side)
    return max(_ceil8(side + 1), round(side * factor / 8) * 8)


def _canvas_size(w: int, h: int, key: str, factor: float) -> tuple[int, int]:
    grow_w, grow_h = _GROWS[key]
    return _canvas_side(w, factor, grow_w), _canvas_side(h, factor, grow_h)


def _fits(cw: int, ch: int, max_pixels: int, max_side: int) -> bool:
    return cw * ch <= max_pixels and max(cw, ch) <= max_side


def _fit(w: int, h: int, key: str, factor: float, max_pixels: int, max_side: int) -> tuple[int, int, float]:
    """The (possibly shrunk) original size and the uniform scale that make the canvas fit the budget."""
    cw, ch = _canvas_size(w, h, key, factor)
    if _fits(cw, ch, max_pixels, max_side):
        return w, h, 1.0
    scale = min(math.sqrt(max_pixels / (cw * ch)), max_side / max(cw, ch))
    while scale > 0:
        sw, sh = max(1, math.floor(w * scale)), max(1, math.floor(h * scale))
        if _fits(*_canvas_size(sw, sh, key, factor), max_pixels, max_side):
            return sw, sh, scale
        scale *= 0.98
    raise InvalidRequest(f"a {w}x{h} image cannot be outpainted within {max_pixels} pixels / {max_side} px")


def _offset(canvas: int, side: int, key: str, before: str, after: str) -> int:
    """Where the original starts on one axis: anchored opposite the growth, else centred."""
    if key == before:  # growing towards the start ("left"/"up"): the original sits at the end
        return canvas - side
    if key == after:
        return 0
    return (canvas - side) // 2


def _prefill(original: np.ndarray, cw: int, ch: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Edge pixels stretched outwards, blurred and lightly noised (deterministic) in the new area."""
    x0, y0, x1, y1 = box
    pad = ((y0, ch - y1), (x0, cw - x1), (0, 0))
    stretched = np.pad(original, pad, mode="edge")
    radius = max(2.0, min(x1 - x0, y1 - y0) / 12)
    blurred = np.asarray(
        Image.fromarray(stretched).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32
    )
    noise = np.random.default_rng(0).normal(0.0, NOISE_STD, blurred.shape).astype(np.float32)
    filled = np.clip(blurred + noise, 0, 255).astype(np.uint8)
    filled[y0:y1, x0:x1] = original
    return filled


def _bands(box: tuple[int, int, int, int], cw: int, ch: int, overlap: int) -> tuple[int, int, int, int]:
    """Overlap widths on the sides of the original that border new area (at most a quarter of its side)."""
    x0, y0, x1, y1 = box
    bw, bh = min(overlap, (x1 - x0) // 4), min(overlap, (y1 - y0) // 4)
    return (bw if x0 > 0 else 0, bh if y0 > 0 else 0, bw if x1 < cw else 0, bh if y1 < ch else 0)


def _mask(cw: int, ch: int, box: tuple[int, int, int, int], bands: tuple[int, int, int, int]) -> Image.Image:
    x0, y0, x1, y1 = box
    mask = np.full((ch, cw), 255, dtype=np.uint8)
    mask[y0 + bands[1] : y1 - bands[3], x0 + bands[0] : x1 - bands[2]] = 0
    return Image.fromarray(mask)


def plan_outpaint(
    image: Image.Image, direction: str, factor: float, *, max_pixels: int, max_side: int, overlap: int = 8
) -> OutpaintPlan:
    """Grow `image` by `factor` towards `direction` ("all" = zoom out), shrinking everything to fit the budget."""
    key = _check(direction, factor, max_pixels, max_side, overlap)
    src = image.convert("RGB")
    w, h, scale = _fit(*src.size, key, factor, max_pixels, max_side)
    if (w, h) != src.size:
        src = src.resize((w, h), Image.Resampling.LANCZOS)
    cw, ch = _canvas_size(w, h, key, factor)
    x0 = _offset(cw, w, key, "left", "right")
    y0 = _offset(ch, h, key, "up", "down")
    box = (x0, y0, x0 + w, y0 + h)
    bands = _bands(box, cw, ch, overlap)
    canvas = Image.fromarray(_prefill(np.asarray(src), cw, ch, box))
    return OutpaintPlan(canvas, _mask(cw, ch, box, bands), box, src, scale, bands)


def _keep_weights(plan: OutpaintPlan) -> np.ndarray:
    """Per-pixel weight of the original: 1 where the mask keeps it, ramping to 0 across each overlap band."""
    cw, ch = plan.canvas.size
    x0, y0, x1, y1 = plan.box
    left, top, right, bottom = plan.bands
    xs, ys = np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)
    wx = np.ones_like(xs)
    wy = np.ones_like(ys)
    if left:
        wx = np.minimum(wx, (xs - x0 + 1) / (left + 1))
    if right:
        wx = np.minimum(wx, (x1 - xs) / (right + 1))
    if top:
        wy = np.minimum(wy, (ys - y0 + 1) / (top + 1))
    if bottom:
        wy = np.minimum(wy, (y1 - ys) / (bottom + 1))
    weights = np.zeros((ch, cw), dtype=np.float32)
    weights[y0:y1, x0:x1] = np.minimum(wy[:, None], wx[None, :])
    weights[np.asarray(plan.mask) == 0] = 1.0
    return weights


def restore(result: Image.Image, plan: OutpaintPlan, *, feather: bool = True) -> Image.Image:
    """Paste the original back exactly where the mask is 0; feather it into the overlap band when asked."""
    if result.size != plan.canvas.size:
        raise InvalidRequest(
            f"outpaint result is {result.size[0]}x{result.size[1]} but the plan's canvas is "
            f"{plan.canvas.size[0]}x{plan.canvas.size[1]}; restore needs the canvas-sized inpaint output"
        )
    x0, y0, x1, y1 = plan.box
    placed = np.zeros((plan.canvas.size[1], plan.canvas.size[0], 3), dtype=np.float32)
    placed[y0:y1, x0:x1] = np.asarray(plan.original.convert("RGB"), dtype=np.float32)
    out = np.asarray(result.convert("RGB"), dtype=np.float32)
    if feather:
        weights = _keep_weights(plan)[..., None]
    else:
        weights = (np.asarray(plan.mask) == 0).astype(np.float32)[..., None]
    merged = np.rint(placed * weights + out * (1.0 - weights)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(merged)
