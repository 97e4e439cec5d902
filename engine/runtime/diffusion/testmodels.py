"""Tiny random-weight pipelines built offline (tests and `atelier chat --demo`); deterministic and cached on disk."""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path

TINY_SEED = 0
_MARKER = "atelier_tiny.json"
_VERSION = 2


def _vocab() -> dict[str, int]:
    chars = string.ascii_lowercase + string.digits + ".,!?'-:;()/&+"
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += list(chars) + [c + "</w>" for c in chars]
    return {t: i for i, t in enumerate(tokens)}


def write_tiny_tokenizer(path: Path) -> None:
    """Write a character-level CLIP tokenizer (vocab.json + merges.txt) into `path`."""
    from transformers import CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps(_vocab()), encoding="utf-8")
        merges.write_text("#version: 0.2\n", encoding="utf-8")
        tok = CLIPTokenizer(str(vocab), str(merges), pad_token="<|endoftext|>", model_max_length=77)
        tok.save_pretrained(path)


def tiny_clip_tokenizer(out: Path):
    """The character-level CLIP tokenizer, loaded from a scratch folder under `out` that is then removed."""
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(out / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(out / "_tok")
    shutil.rmtree(out / "_tok")
    return tokenizer


# the width of every tiny CLIP tower: the text encoders, the safety checker's and the IP-Adapter's vision towers
TINY_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}


def _text_config(projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        **TINY_TOWER, num_hidden_layers=5, vocab_size=len(_vocab()), projection_dim=projection_dim,
        hidden_act="gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip


# the tiny CLIP vision tower of the safety checker and the IP-Adapter image encoder
TINY_VISION = {**TINY_TOWER, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8, "projection_dim": 32}


def save_tiny_image_processor(out: Path) -> None:
    """The 32 px CLIPImageProcessor that goes with TINY_VISION."""
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)


def _vae():
    """A tiny VAE whose encoder is near-deterministic (logvar -30) with real-SD-like latent scale (std ~5)."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
    )
    with torch.no_grad():
        vae.quant_conv.weight[4:] = 0.0
        vae.quant_conv.bias[4:] = -30.0
        vae.quant_conv.weight[:4] *= 20.0
        vae.quant_conv.bias[:4] *= 20.0
    return vae


def euler_scheduler(**extra: object):
    """Stable Diffusion's Euler scheduler config (scaled-linear betas), with `extra` settings on top."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        **extra,
    )


def _is_built(path: Path, kind: str) -> bool:
    marker = path / _MARKER
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("kind") == kind and data.get("version") == _VERSION


def _build(path: Path, kind: str, save) -> Path:
    """Build into a temp dir beside `path`, then move it into place (safe against half-written caches)."""
    import torch

    path = Path(path)
    if _is_built(path, kind):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            save(tmp)
        (tmp / _MARKER).write_text(json.dumps({"kind": kind, "version": _VERSION}), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        try:
            tmp.rename(path)
        except OSError:
            if not _is_built(path, kind):  # another process may have won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# the SD1.5 and SDXL tiny UNets' shared shape (two blocks, cross-attention in the inner one)
_TINY_UNET = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


def _save_sd(out: Path) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(**_TINY_UNET, cross_attention_dim=32)
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config())
    tokenizer = tiny_clip_tokenizer(out)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=euler_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _save_sdxl(out: Path) -> None:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        **_TINY_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32 (pooled projection)
        cross_attention_dim=64,  # 32 + 32 hidden sizes of the two encoders
    )
    tokenizer = tiny_clip_tokenizer(out)
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=euler_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _save_safety(out: Path) -> None:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    config = CLIPConfig(text_config=_text_config().to_dict(), vision_config=TINY_VISION, projection_dim=32)
    StableDiffusionSafetyChecker(config).save_pretrained(out, safe_serialization=True)
    save_tiny_image_processor(out)


def _save_upscaler(out: Path) -> None:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=(True, True, False),
        num_class_embeds=100,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
        scaling_factor=0.08333,
    )
    tokenizer = tiny_clip_tokenizer(out)
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def ensure_tiny_upscaler(path: Path) -> Path:
    """Build (once) a tiny random StableDiffusionUpscalePipeline (x4) at `path`."""
    return _build(Path(path), "upscaler", _save_upscaler)


def ensure_tiny_sd(path: Path) -> Path:
    """Build (once) a tiny random SD1.5-family pipeline at `path`; returns the path."""
    return _build(Path(path), "sd15", _save_sd)


def ensure_tiny_sdxl(path: Path) -> Path:
    """Build (once) a tiny random SDXL-family pipeline (two text encoders) at `path`."""
    return _build(Path(path), "sdxl", _save_sdxl)


def ensure_tiny_safety_checker(path: Path) -> Path:
    """Build (once) a tiny StableDiffusionSafetyChecker + feature extractor config at `path`."""
    return _build(Path(path), "safety", _save_safety)


def write_tiny_lora(pipeline_path: Path, out_dir: Path, seed: int = 1, rank: int = 4) -> Path:
    """Write a random LoRA for the tiny SD unet at `out_dir/pytorch_lora_weights.safetensors`; returns the file."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    out_dir = Path(out_dir)
    target = out_dir / "pytorch_lora_weights.safetensors"
    if target.is_file():
        return target
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_path, safety_checker=None)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        init_lora_weights="gaussian",
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe.unet.add_adapter(config)
        with torch.no_grad():
            for name, param in pipe.unet.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
    state = get_peft_model_state_dict(pipe.unet)
    out_dir.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=state, safe_serialization=True)
    return target


def ensure_demo_models(root: Path) -> dict[str, Path]:
    """Build every tiny demo model under `root`; returns {"sd15", "sdxl", "safety", "lora"} paths."""
    root = Path(root)
    sd = ensure_tiny_sd(root / "tiny-sd15")
    return {
        "sd15": sd,
        "sdxl": ensure_tiny_sdxl(root / "tiny-sdxl"),
        "safety": ensure_tiny_safety_checker(root / "tiny-safety"),
        "lora": write_tiny_lora(sd, root / "tiny-lora"),
    }
