"""Cheap step previews: a linear latent→RGB projection (no VAE decode), per family."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

# Published latent→RGB approximations (rows: latent channels, cols: R, G, B).
_FACTORS: dict[str, list[list[float]]] = {
    "sd15": [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    "sdxl": [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.6094],
    ],
}


def latent_preview(latents: Any, family: str, size: tuple[int, int] | None = None) -> Image.Image | None:
    """An RGB preview of the first latent in the batch, resized to `size`; None when the family has no projection."""
    factors = _FACTORS.get(family)
    if factors is None or latents is None or getattr(latents, "ndim", 0) != 4 or latents.shape[1] != 4:
        return None
    lat = latents[0].detach().float().cpu().numpy()  # (4, h, w)
    rgb = np.einsum("chw,cr->hwr", lat, np.asarray(factors, dtype=np.float32))
    rgb = np.nan_to_num((rgb + 1.0) * 127.5, nan=0.0, posinf=255.0, neginf=0.0)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    return img.resize(size, Image.Resampling.BILINEAR) if size else img
