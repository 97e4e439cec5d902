"""Opt-in speed paths on a loaded pipeline, from the `gpu` settings: attention kernel, fused QKV,
channels-last, LoRA hot-swap, torch.compile of the denoiser (warmed at load) and VAE tiling above a size.

Measured pixel agreement with the plain path (tiny SD, CPU, fp32; tests/test_fastpaths.py):
attention, channels_last, fuse_qkv, compile and hot-swap stay within TOLERANCE (uint8 levels);
VAE tiling does not (blended tiles), so `vae_tiling_over_px` is off by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.config import Gpu

log = logging.getLogger("atelier.engine")
TOLERANCE = 2  # max |Δ| in uint8 levels a fast path may change a pixel by to be "in agreement"
BACKEND: str | Callable[..., Any] = "inductor"  # torch.compile backend (tests swap in a counting one)
# first-load guesses of compile + warm-up seconds, added to the arbiter's size-based load-time guess
WARMUP_GUESS_S = {"sd15": 45.0, "sdxl": 90.0, "flux": 150.0}


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoising network (UNet or transformer)."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def apply(pipe: Any, gpu: Gpu, preset: dict[str, Any]) -> set[str]:
    """Turn on the configured paths in load order (hot-swap before compile); returns the names applied."""
    applied: set[str] = set()
    net = denoiser(pipe)
    if gpu.attention == "default" and hasattr(net, "set_default_attn_processor"):
        net.set_default_attn_processor()
        if hasattr(pipe.vae, "set_default_attn_processor"):
            pipe.vae.set_default_attn_processor()
        applied.add("attention_default")
    if gpu.fuse_qkv and gpu.attention == "sdpa" and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
        applied.add("fuse_qkv")
    if gpu.channels_last:
        import torch

        net.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied.add("channels_last")
    if gpu.lora_hotswap and hasattr(pipe, "enable_lora_hotswap"):
        pipe.enable_lora_hotswap(target_rank=gpu.lora_max_rank, check_compiled="warn")
        applied.add("lora_hotswap")
    if gpu.compile:
        net.compile(backend=BACKEND)
        warm_up(pipe, preset)
        applied.add("compile")
    if applied:
        log.info("fast paths on %s: %s", preset.get("name"), ", ".join(sorted(applied)))
    return applied


def warm_up(pipe: Any, preset: dict[str, Any]) -> None:
    """One denoising step at the preset's size and guidance (compiles the denoiser; no VAE decode)."""
    import torch

    cfg = float(preset.get("cfg", 7.0))
    kwargs: dict[str, Any] = {
        "prompt": "warm-up",
        "num_inference_steps": 1,
        "guidance_scale": cfg,
        "width": int(preset.get("width", 512)),
        "height": int(preset.get("height", 512)),
        "output_type": "latent",
        "generator": torch.Generator("cpu").manual_seed(0),
    }
    if cfg > 1.0 and preset.get("family", "sd15") != "flux":
        kwargs["negative_prompt"] = ""
    with torch.inference_mode():
        pipe(**kwargs)


def warmup_guess_s(gpu: Gpu, family: str) -> float:
    """Extra seconds a first load takes because of compile + warm-up (0 when compile is off)."""
    return WARMUP_GUESS_S.get(family, 60.0) if gpu.compile else 0.0


def before_loras(pipe: Any, loras: list[tuple[str, float]], applied: set[str]) -> None:
    """LoRAs target the separate q/k/v projections: unfuse while any is requested, refuse when none is."""
    if "fuse_qkv" not in applied:
        return
    fused = bool(getattr(pipe, "fusing_unet", False))
    if loras and fused:
        pipe.unfuse_qkv_projections()
    elif not loras and not fused:
        pipe.fuse_qkv_projections()


def vae_tiling(pipe: Any, gpu: Gpu, width: int, height: int, degraded: set[str]) -> None:
    """Tile the VAE above gpu.vae_tiling_over_px; back to whole decodes below it (unless OOM-degraded)."""
    if gpu.vae_tiling_over_px is None:
        return
    if width * height > gpu.vae_tiling_over_px:
        pipe.vae.enable_tiling()
    elif "vae_tiling" not in degraded:
        pipe.vae.disable_tiling()
