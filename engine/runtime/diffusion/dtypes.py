"""Torch dtypes for diffusers loads (a leaf: the pipeline, upscaler and ControlNet weights share it)."""

from __future__ import annotations

from typing import Any


def pick_dtype(setting: str, device: str, family: str) -> Any:
    """The torch dtype for `device`: "auto" means fp32 on CPU, bf16 for FLUX and Wan, else fp16."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device == "cpu":
        return torch.float32
    bf16 = ("flux", "kontext", "qwen-edit", "qwen-edit-plus", "klein", "wan", "wan-i2v")
    return torch.bfloat16 if family in bf16 else torch.float16


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """{"dtype": d} on diffusers that renamed torch_dtype (0.36+), else {"torch_dtype": d}."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}
