"""Tiny random-weight ControlNet and IP-Adapter models for the tiny SD1.5/SDXL test pipelines (offline)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.runtime.diffusion.testmodels import TINY_VISION, _build, save_tiny_image_processor

FAMILIES: tuple[str, ...] = ("sd15", "sdxl")
IP_ADAPTER_WEIGHTS = "ip-adapter.safetensors"
IMAGE_ENCODER_FOLDER = "image_encoder"
_CONTROL_VERSION = 1  # bump when the tiny control models change shape or initialisation
_ZERO_CONV_STD = 0.2  # std given to the zero-initialised residual convolutions (down blocks and mid block)
_COND_OUT_STD = 4.0  # std of the conditioning embedding's conv_out: large, so the control image itself shows
_IP_STD = 0.5  # std of the IP-Adapter projections so a reference image visibly changes the output
_IMAGE_EMBED_DIM = TINY_VISION["projection_dim"]


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family '{family}'; choose one of: {', '.join(FAMILIES)}")
    return family


def _base_unet(base: Path, family: str):
    """The unet of the tiny `family` pipeline at `base`; ValueError when `base` holds no such pipeline."""
    from diffusers import UNet2DConditionModel

    unet_dir = Path(base) / "unet"
    if not (unet_dir / "config.json").is_file():
        raise ValueError(f"'{base}' is not a tiny pipeline folder (no unet/config.json); build it first")
    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    found = "sdxl" if unet.config.addition_embed_type == "text_time" else "sd15"
    if found != family:
        raise ValueError(f"'{base}' holds a {found} pipeline, not {family}")
    return unet


def _vae_levels(base: Path) -> int:
    """How many times the VAE of the pipeline at `base` halves the image size."""
    config = json.loads((Path(base) / "vae" / "config.json").read_text(encoding="utf-8"))
    return len(config["block_out_channels"]) - 1


def _randomise_zero_convs(net) -> None:
    """Give the zero-initialised convolutions of a fresh ControlNet random (seeded) weights."""
    import torch

    stds = [(m, _ZERO_CONV_STD) for m in (*net.controlnet_down_blocks, net.controlnet_mid_block)]
    stds.append((net.controlnet_cond_embedding.conv_out, _COND_OUT_STD))
    with torch.no_grad():
        for module, std in stds:
            module.weight.normal_(0.0, std)
            module.bias.normal_(0.0, std)


def _save_controlnet(base: Path, family: str):
    def save(out: Path) -> None:
        from diffusers import ControlNetModel

        unet = _base_unet(base, family)
        channels = tuple(16 * 2**i for i in range(_vae_levels(base) + 1))  # downsample like the VAE
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
        _randomise_zero_convs(net)
        net.save_pretrained(out, safe_serialization=True)

    return save


def ensure_tiny_controlnet(path: Path, base: Path, family: str) -> Path:
    """Build (once) a tiny random ControlNetModel for the tiny `family` pipeline at `base`; returns `path`."""
    family = _check_family(family)
    return _build(
        Path(path), f"controlnet-{family}-v{_CONTROL_VERSION}", _save_controlnet(Path(base), family)
    )


def _image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VISION))


def _cross_attention_shapes(unet) -> list[tuple[int, int]]:
    """(out, in) shapes of attn2.to_k for each cross-attention processor, in `unet.attn_processors` order."""
    modules = dict(unet.named_modules())
    shapes = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        attn = modules[name.removesuffix(".processor")]
        shapes.append(tuple(attn.to_k.weight.shape))
    return shapes


def ip_adapter_state_dict(unet) -> dict:
    """Random IP-Adapter weights (flat `image_proj.*` / `ip_adapter.{1,3,5..}.*` keys) matching `unet`."""
    import torch

    dim = unet.config.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(dim * 4, _IMAGE_EMBED_DIM) * _IP_STD,
        "image_proj.proj.bias": torch.randn(dim * 4) * _IP_STD,
        "image_proj.norm.weight": torch.ones(dim),
        "image_proj.norm.bias": torch.zeros(dim),
    }
    for index, shape in enumerate(_cross_attention_shapes(unet)):
        key_id = 2 * index + 1
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(shape) * _IP_STD
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(shape) * _IP_STD
    return state


def _save_ip_adapter(base: Path, family: str):
    def save(out: Path) -> None:
        from safetensors.torch import save_file

        unet = _base_unet(base, family)
        encoder_dir = out / IMAGE_ENCODER_FOLDER
        _image_encoder().save_pretrained(encoder_dir, safe_serialization=True)
        save_tiny_image_processor(encoder_dir)
        state = {k: v.contiguous() for k, v in ip_adapter_state_dict(unet).items()}
        save_file(state, str(out / IP_ADAPTER_WEIGHTS))

    return save


def ensure_tiny_ip_adapter(path: Path, base: Path, family: str) -> Path:
    """Build (once) a tiny IP-Adapter folder (ip-adapter.safetensors + image_encoder/) for the pipeline at `base`."""
    family = _check_family(family)
    return _build(
        Path(path), f"ip-adapter-{family}-v{_CONTROL_VERSION}", _save_ip_adapter(Path(base), family)
    )


def ensure_control_demo_models(root: Path, sd15: Path, sdxl: Path) -> dict[str, Path]:
    """Build every tiny control model under `root` for the tiny pipelines; returns their paths by name."""
    root = Path(root)
    return {
        "controlnet-sd15": ensure_tiny_controlnet(root / "tiny-controlnet-sd15", sd15, "sd15"),
        "controlnet-sdxl": ensure_tiny_controlnet(root / "tiny-controlnet-sdxl", sdxl, "sdxl"),
        "ip-adapter-sd15": ensure_tiny_ip_adapter(root / "tiny-ip-adapter-sd15", sd15, "sd15"),
        "ip-adapter-sdxl": ensure_tiny_ip_adapter(root / "tiny-ip-adapter-sdxl", sdxl, "sdxl"),
    }
