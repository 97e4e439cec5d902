"""ControlNet weights as an arbiter client: loaded onto the device beside (not inside) a diffusion model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.runtime.diffusion import oom
from engine.runtime.diffusion.errors import ModelNotAvailable
from engine.runtime.diffusion.resolve import resolve_model, weights_bytes

log = logging.getLogger("atelier.engine")
NET_PATTERNS = ["*.json", "*.safetensors"]
# rough fp16 sizes used before the weights are downloaded
FAMILY_NET_BYTES = {"sd15": 723_000_000, "sdxl": 2_500_000_000, "flux": 3_300_000_000}


class ControlNetWeights:
    """One ControlNet (diffusers format, hub id or local folder) for a model family; `module` once loaded."""

    kind = "controlnet"

    def __init__(
        self, ref: str, family: str, models_dir: Path | None = None, name: str = "", dtype: str = "auto"
    ) -> None:
        self.ref, self.family, self.models_dir = ref, family, models_dir
        self.name = name or f"controlnet:{ref}"
        self.dtype = dtype
        self.module: Any = None

    def _who(self) -> str:
        return f"ControlNet '{self.ref}'"

    def estimate_bytes(self) -> int:
        """Weights at fp16 (from safetensors headers) + 10%, or a family-typical size before download."""
        try:
            path = resolve_model(
                self.ref, self._who(), self.models_dir, download=False, patterns=NET_PATTERNS
            )
            return int(weights_bytes(path, 2) * 1.1)
        except ModelNotAvailable:
            return FAMILY_NET_BYTES.get(self.family, FAMILY_NET_BYTES["sdxl"])

    @property
    def loaded(self) -> bool:
        """True while the weights are loaded."""
        return self.module is not None

    def load(self, device: str) -> None:
        """Load the ControlNet onto `device` at the pipelines' dtype (FLUX nets use FluxControlNetModel)."""
        import diffusers

        from engine.runtime.diffusion.dtypes import dtype_kwargs, pick_dtype

        if self.module is not None:
            return
        path = resolve_model(self.ref, self._who(), self.models_dir, patterns=NET_PATTERNS)
        cls = diffusers.FluxControlNetModel if self.family == "flux" else diffusers.ControlNetModel
        kw = dtype_kwargs(pick_dtype(self.dtype, device, self.family))
        try:
            module = cls.from_pretrained(str(path), **kw)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelNotAvailable(
                f"{self._who()}: cannot load a {self.family} ControlNet from {path}: {e}"
            ) from e
        self.module = module.to(device)
        log.info("loaded %s (%s) on %s", self._who(), self.family, device)

    def unload(self) -> None:
        """Drop the module and free cached device memory."""
        self.module = None
        oom.free_memory()

    def close(self) -> None:
        """Final release."""
        self.unload()
