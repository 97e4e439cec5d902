"""Tiny offline add-ons for the tiny pipelines: a textual-inversion embedding and an alternative AutoencoderKL."""

from __future__ import annotations

from pathlib import Path

TINY_HIDDEN = 32  # hidden size of the tiny CLIP text encoders (testmodels._text_config)


def write_tiny_embedding(out: Path, seed: int = 3, vectors: int = 1, sdxl: bool = False) -> Path:
    """Write a random TI embedding (`emb_params`, or SDXL's clip_l/clip_g) at `out` (.safetensors); returns it."""
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    if out.is_file():
        return out
    gen = torch.Generator("cpu").manual_seed(seed)

    def vec() -> torch.Tensor:
        return torch.randn(vectors, TINY_HIDDEN, generator=gen) * 2.0

    state = {"clip_l": vec(), "clip_g": vec()} if sdxl else {"emb_params": vec()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return out


def write_tiny_vae(out: Path, seed: int = 5) -> Path:
    """Save a tiny random AutoencoderKL (same shape as the tiny pipelines' VAE, other weights) at `out`."""
    import torch

    from engine.runtime.diffusion.testmodels import _vae

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = _vae()
    vae.save_pretrained(out, safe_serialization=True)
    return out
