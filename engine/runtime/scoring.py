"""CLIP prompt–image similarity (the CLIP score) as a Managed model behind the arbiter, and its tiny offline twin."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING

from engine.runtime.diffusion.resolve import resolve_model, weights_bytes
from engine.runtime.managed import ModelNotAvailable

if TYPE_CHECKING:
    from PIL import Image

TINY_CLIP_REF = "demo:tiny-clip"
REAL_CLIP_BYTES = 620_000_000  # openai/clip-vit-base-patch32 in float32


def ensure_tiny_clip(path: Path) -> Path:
    """Build (once) a tiny random-weight CLIPModel with its tokenizer and image processor at `path`."""
    from engine.runtime.diffusion import testmodels as tm

    def save(out: Path) -> None:
        from transformers import CLIPConfig, CLIPModel

        config = CLIPConfig(
            text_config=tm._text_config().to_dict(), vision_config=tm.TINY_VISION, projection_dim=32
        )
        CLIPModel(config).save_pretrained(out, safe_serialization=True)
        tm.write_tiny_tokenizer(out)
        tm.save_tiny_image_processor(out)

    return tm._build(Path(path), "clip", save)


class ClipScorer:
    """A CLIPModel that scores images against a prompt: 100 × cosine similarity of their embeddings."""

    kind = "scorer"

    def __init__(self, name: str, ref: str, models_dir: Path | None = None) -> None:
        self.name, self.ref, self.models_dir = name, ref, models_dir
        self._model = self._tokenizer = self._processor = None
        self._device = "cpu"

    def path(self) -> Path:
        """The local folder of the model (never downloads); ModelNotAvailable when it is not here."""
        return resolve_model(self.ref, "scoring.clip_model", self.models_dir, download=False)

    def estimate_bytes(self) -> int:
        """Weights on disk, or the size of CLIP ViT-B/32 when not known."""
        try:
            return weights_bytes(self.path())
        except (ModelNotAvailable, OSError):
            return REAL_CLIP_BYTES

    def load(self, device: str) -> None:
        """Load onto `device` (idempotent)."""
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        if self._model is not None and self._device == device:
            return
        path = self.path()
        self._tokenizer = CLIPTokenizer.from_pretrained(path)
        self._processor = CLIPImageProcessor.from_pretrained(path)
        self._model = CLIPModel.from_pretrained(path).to(device).eval()
        self._device = device

    @property
    def loaded(self) -> bool:
        """True while the weights are in memory."""
        return self._model is not None

    def unload(self) -> None:
        """Drop the model."""
        self._model = self._tokenizer = self._processor = None
        gc.collect()

    def close(self) -> None:
        """Final release."""
        self.unload()

    def score(self, prompt: str, images: list[Image.Image]) -> list[float]:
        """The CLIP score of each image against `prompt` (blocking; call off the loop)."""
        import torch

        if self._model is None or self._tokenizer is None or self._processor is None:
            raise RuntimeError(f"{self.name} is not loaded")
        max_len = min(int(getattr(self._tokenizer, "model_max_length", 77) or 77), 77)
        text = self._tokenizer([prompt], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        pixels = self._processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        with torch.no_grad():
            t = self._model.get_text_features(**{k: v.to(self._device) for k, v in text.items()})
            v = self._model.get_image_features(pixel_values=pixels.to(self._device, self._model.dtype))
            t = getattr(t, "pooler_output", t)
            v = getattr(v, "pooler_output", v)
            t = t / t.norm(dim=-1, keepdim=True)
            v = v / v.norm(dim=-1, keepdim=True)
            sims = (v @ t.T).squeeze(-1)
        return [round(100.0 * float(s), 2) for s in sims]
