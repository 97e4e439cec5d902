"""FLUX Redux: reference images become extra prompt tokens of a FLUX pipeline, weighted per image (/blend).

The prior (SigLIP vision model + ReduxImageEncoder, diffusers' FluxPriorReduxPipeline) is part of its FLUX
model: the preset names it (`redux`), the model's estimate counts it, it loads on the first Redux reference
(a gated or missing prior fails that request only, never plain generation) and unloads with the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.runtime.diffusion.dtypes import dtype_kwargs
from engine.runtime.diffusion.errors import ModelNotAvailable
from engine.runtime.diffusion.guidance import ReferenceSpec
from engine.runtime.diffusion.resolve import looks_like_path, resolve_model, weights_bytes

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("atelier.engine")
REDUX_BYTES = 1_000_000_000  # FLUX.1-Redux-dev in bf16 when not yet on disk: SigLIP so400m + the Redux encoder


def redux_bytes(ref: str | None, who: str, models_dir: Path | None, itemsize: int) -> int:
    """What a preset's Redux prior adds to its FLUX model's memory estimate (0 without one)."""
    if not ref:
        return 0
    try:
        return weights_bytes(resolve_model(ref, who, models_dir, download=False), itemsize)
    except ModelNotAvailable:
        if looks_like_path(ref):
            raise
        return REDUX_BYTES


def image_tokens(prior: Any) -> int:
    """The tokens the prior adds per reference: one per SigLIP patch (SigLIP has no class token)."""
    cfg = prior.image_encoder.config
    return int((cfg.image_size // cfg.patch_size) ** 2)


def shares(ref: ReferenceSpec) -> list[tuple[Image.Image, float]]:
    """(image, share) for each image of weight > 0: its weight over the sum, so the prompt's own embedding stays
    whole; an image of weight 0 is left out (not encoded at all)."""
    images = [ref.image, *ref.others]
    weights = list(ref.weights) or [1.0] * len(images)
    total = sum(weights)
    return [(im.convert("RGB"), w / total) for im, w in zip(images, weights, strict=True) if w > 0]


class ReduxPrior:
    """The Redux prior of one FLUX model; it borrows the pipeline's text encoders to encode the prompt."""

    def __init__(self, who: str, models_dir: Path | None = None) -> None:
        self.who = who
        self.models_dir = models_dir
        self.loaded: str | None = None  # the prior's resolved reference
        self._prior: Any = None

    def apply(self, pipe: Any, ref: ReferenceSpec | None) -> None:
        """Load the prior a Redux reference names (once, onto the pipeline's device and dtype)."""
        if ref is None or ref.via != "redux" or ref.adapter["model"] == self.loaded:
            return
        from diffusers import FluxPriorReduxPipeline

        self.clear()
        path = resolve_model(ref.adapter["model"], f"{self.who} Redux prior", self.models_dir)
        texts = {k: getattr(pipe, k) for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
        try:
            prior = FluxPriorReduxPipeline.from_pretrained(str(path), **dtype_kwargs(pipe.transformer.dtype), **texts)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelNotAvailable(f"{self.who}: cannot load the FLUX Redux prior from {path}: {e}") from e
        device = pipe._execution_device
        prior.image_encoder.to(device)
        prior.image_embedder.to(device)
        prior.set_progress_bar_config(disable=True)
        self._prior, self.loaded = prior, ref.adapter["model"]
        log.info("loaded the FLUX Redux prior %s for %s", path, self.who)

    def embed(self, ref: ReferenceSpec | None, kw: dict[str, Any]) -> None:
        """Swap `kw`'s prompt for prompt + the images' Redux tokens: their weighted mean, times `ref.scale`."""
        if ref is None or ref.via != "redux":
            return
        import torch

        images, share = zip(*shares(ref), strict=True)
        prompt, n = kw.pop("prompt"), len(images)
        kw.pop("ip_adapter_image", None)
        prior = self._prior
        with torch.inference_mode():  # the prompt is encoded once, not once per image (the same embedding, bit for bit)
            text, pooled, _ = prior.encode_prompt(
                prompt=[prompt], device=prior._execution_device, num_images_per_prompt=1, max_sequence_length=512
            )
            out = prior(
                list(images), prompt_embeds=text.repeat(n, 1, 1), pooled_prompt_embeds=pooled.repeat(n, 1),
                prompt_embeds_scale=list(share), pooled_prompt_embeds_scale=list(share),
            )  # fmt: skip
            embeds = out.prompt_embeds
            embeds[:, -image_tokens(prior) :] *= ref.scale  # the image tokens come last (in place: inside the mode)
        kw["prompt_embeds"], kw["pooled_prompt_embeds"] = embeds, out.pooled_prompt_embeds

    def clear(self) -> None:
        """Drop the prior (the borrowed text encoders stay with the pipeline)."""
        if self._prior is not None:
            log.info("unloaded the FLUX Redux prior from %s", self.who)
        self._prior, self.loaded = None, None
