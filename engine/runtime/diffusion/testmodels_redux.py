"""A tiny random-weight FLUX.1 text-to-image pipeline and a FLUX Redux prior that fits it, built offline."""

from __future__ import annotations

from pathlib import Path

from engine.runtime.diffusion.testmodels import _build
from engine.runtime.diffusion.testmodels_edit import ensure_tiny_kontext

TEXT_DIM = 32  # the tiny FLUX transformer's joint_attention_dim (= its T5's d_model): Redux tokens join the text
SIGLIP_SIZE = 32  # the tiny SigLIP's image side; 8 px patches -> 16 image tokens per reference image


def _save_flux(out: Path, kontext: Path) -> None:
    from diffusers import FluxKontextPipeline, FluxPipeline

    parts = FluxKontextPipeline.from_pretrained(kontext).components  # same components, plain txt2img class
    FluxPipeline(**parts).save_pretrained(out, safe_serialization=True)


def _save_redux(out: Path) -> None:
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    vision = SiglipVisionConfig(
        hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=SIGLIP_SIZE, patch_size=8,
    )  # fmt: skip
    processor = SiglipImageProcessor(size={"height": SIGLIP_SIZE, "width": SIGLIP_SIZE})
    prior = FluxPriorReduxPipeline(
        image_encoder=SiglipVisionModel(vision),
        feature_extractor=processor,
        image_embedder=ReduxImageEncoder(redux_dim=vision.hidden_size, txt_in_features=TEXT_DIM),
    )
    prior.save_pretrained(out, safe_serialization=True)


def ensure_tiny_flux(path: Path) -> Path:
    """Build (once) a tiny random FluxPipeline at `path` (the tiny Kontext's components); returns the path."""
    path = Path(path)
    kontext = ensure_tiny_kontext(path.parent / "tiny-kontext")
    return _build(path, "flux", lambda out: _save_flux(out, kontext))


def ensure_tiny_redux(path: Path) -> Path:
    """Build (once) a tiny random FluxPriorReduxPipeline (SigLIP + Redux encoder) at `path`; returns the path."""
    return _build(Path(path), "redux", _save_redux)
