"""Full-size SD1.5 and SDXL pipelines with their true configs and random weights, built offline and cached.

The architecture sets the cost, not the weights: UNet, VAE and text encoders use the published configs
(runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0). Tokenizers are the offline
character-level CLIP tokenizer of engine/runtime/diffusion/testmodels.py (prompts are padded to 77 tokens,
so the text encoders do the same work as with the real vocabulary).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from engine.runtime.diffusion import testmodels

VOCAB = 49408  # CLIP's vocabulary size: the embedding tables are full size

UNET_IO: dict[str, Any] = {"in_channels": 4, "out_channels": 4, "layers_per_block": 2}  # SD1.5 and SDXL
SD15_UNET: dict[str, Any] = {
    **UNET_IO,
    "sample_size": 64,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SDXL_UNET: dict[str, Any] = {
    **UNET_IO,
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
}
CLIP_L: dict[str, Any] = {  # openai/clip-vit-large-patch14 text tower (SD1.5; SDXL's first encoder)
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG: dict[str, Any] = {  # laion OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder)
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


def cache_dir() -> Path:
    """ATELIER_FULLSIZE_CACHE, else a per-user folder under the temp dir."""
    default = Path(tempfile.gettempdir()) / f"atelier-fullsize-{os.getuid()}"
    return Path(os.environ.get("ATELIER_FULLSIZE_CACHE", default))


def _text(spec: dict[str, Any], with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=VOCAB, bos_token_id=0, eos_token_id=1, pad_token_id=1, **spec)
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _vae(scaling_factor: float, sample_size: int, force_upcast: bool) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        **VAE, sample_size=sample_size, scaling_factor=scaling_factor, force_upcast=force_upcast
    )


def _save(pipe: Any, out: Path, dtype: Any) -> None:
    pipe.to(dtype)
    pipe.save_pretrained(out, safe_serialization=True)


def save_sd15(out: Path, dtype: Any) -> None:
    """Build and save a random-weight full-size SD1.5 pipeline."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipe = StableDiffusionPipeline(
        vae=_vae(0.18215, 512, force_upcast=False),
        text_encoder=_text(CLIP_L),
        tokenizer=testmodels.tiny_clip_tokenizer(out),
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=testmodels.euler_scheduler(timestep_spacing="leading"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save(pipe, out, dtype)


def save_sdxl(out: Path, dtype: Any) -> None:
    """Build and save a random-weight full-size SDXL base pipeline."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tok = testmodels.tiny_clip_tokenizer(out)
    pipe = StableDiffusionXLPipeline(
        vae=_vae(0.13025, 1024, force_upcast=True),
        text_encoder=_text(CLIP_L),
        text_encoder_2=_text(CLIP_BIGG, with_projection=True),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=UNet2DConditionModel(**SDXL_UNET),
        scheduler=testmodels.euler_scheduler(timestep_spacing="leading"),
        force_zeros_for_empty_prompt=True,
    )
    _save(pipe, out, dtype)


def ensure(family: str, dtype_name: str = "float32", root: Path | None = None) -> Path:
    """Build (once) the full-size `family` pipeline saved at `dtype_name`; returns its folder."""
    import torch

    dtype = getattr(torch, dtype_name)
    save = {"sd15": save_sd15, "sdxl": save_sdxl}[family]
    path = (root or cache_dir()) / f"{family}-{dtype_name}"
    return testmodels._build(path, f"fullsize-{family}", lambda out: save(out, dtype))


def tiny_safety() -> Path:
    """The tiny CLIP safety checker (presets need one even with safety off)."""
    return testmodels.ensure_tiny_safety_checker(cache_dir() / "tiny-safety")


def param_counts(pipe: Any) -> dict[str, int]:
    """Millions of parameters per component (a check that the architecture is the full one)."""
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    out = {}
    for name in names:
        module = getattr(pipe, name, None)
        if module is not None:
            out[name] = round(sum(p.numel() for p in module.parameters()) / 1e6)
    return out
