"""A tiny random-weight CLIP + MLP vision projector (mmproj GGUF) for offline tests of the real vision path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

# The tower: 32x32 images in 8x8 patches (16 image tokens), 2 pre-norm blocks of width 64, 4 heads.
IMAGE_SIZE = 32
PATCH_SIZE = 8
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
MLP_HIDDEN = 128
LAYER_NORM_EPS = 1e-5
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the OpenAI CLIP values
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
FORMAT_VERSION = 1  # bump when the layout changes, so ensure_tiny_mmproj rebuilds old files


def _tensors(n_embd_out: int, seed: int) -> dict[str, np.ndarray]:
    """All tensors in PyTorch layout ([out, in] for linear layers); gguf reverses them into ggml order."""
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    n_pos = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # patches plus the class token
    t: dict[str, np.ndarray] = {
        "v.class_embd": rand(N_EMBD),
        "v.patch_embd.weight": rand(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE),
        "v.position_embd.weight": rand(n_pos, N_EMBD),
        "v.pre_ln.weight": ones(N_EMBD),
        "v.pre_ln.bias": zeros(N_EMBD),
    }
    for il in range(N_LAYER):
        p = f"v.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t[f"{p}.{name}.weight"] = rand(N_EMBD, N_EMBD)
            t[f"{p}.{name}.bias"] = zeros(N_EMBD)
        for name in ("ln1", "ln2"):
            t[f"{p}.{name}.weight"] = ones(N_EMBD)
            t[f"{p}.{name}.bias"] = zeros(N_EMBD)
        t[f"{p}.ffn_up.weight"] = rand(N_FF, N_EMBD)
        t[f"{p}.ffn_up.bias"] = zeros(N_FF)
        t[f"{p}.ffn_down.weight"] = rand(N_EMBD, N_FF)
        t[f"{p}.ffn_down.bias"] = zeros(N_EMBD)
    t["v.post_ln.weight"] = ones(N_EMBD)
    t["v.post_ln.bias"] = zeros(N_EMBD)
    # LLaVA's MLP projector: mm.0 (linear) -> GELU -> mm.2 (linear) into the text model's embedding width.
    t["mm.0.weight"] = rand(MLP_HIDDEN, N_EMBD, scale=0.1)
    t["mm.0.bias"] = zeros(MLP_HIDDEN)
    t["mm.2.weight"] = rand(n_embd_out, MLP_HIDDEN, scale=0.02)
    t["mm.2.bias"] = zeros(n_embd_out)
    return t


def build_tiny_mmproj(path: Path, *, n_embd_out: int, seed: int = 0) -> Path:
    """Write a deterministic random-weight mmproj GGUF (CLIP tower + "mlp" projector) to `path`."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        w = gguf.GGUFWriter(str(tmp), arch="clip")
        w.add_name("atelier-tiny-mmproj")
        w.add_description(f"random-weight test projector (seed {seed}, format {FORMAT_VERSION})")
        w.add_file_type(0)  # all F32
        w.add_bool("clip.has_text_encoder", False)
        w.add_bool("clip.has_vision_encoder", True)
        w.add_bool("clip.has_llava_projector", True)
        w.add_string("clip.projector_type", "mlp")
        w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
        w.add_uint32("clip.vision.patch_size", PATCH_SIZE)
        w.add_uint32("clip.vision.embedding_length", N_EMBD)
        w.add_uint32("clip.vision.feed_forward_length", N_FF)
        w.add_uint32("clip.vision.projection_dim", n_embd_out)
        w.add_uint32("clip.vision.block_count", N_LAYER)
        w.add_uint32("clip.vision.attention.head_count", N_HEAD)
        w.add_float32("clip.vision.attention.layer_norm_epsilon", LAYER_NORM_EPS)
        w.add_array("clip.vision.image_mean", list(IMAGE_MEAN))
        w.add_array("clip.vision.image_std", list(IMAGE_STD))
        w.add_bool("clip.use_gelu", True)
        w.add_uint32("atelier.tiny_mmproj.seed", seed)
        w.add_uint32("atelier.tiny_mmproj.format", FORMAT_VERSION)
        for name, data in _tensors(n_embd_out, seed).items():
            w.add_tensor(name, data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def ensure_tiny_mmproj(folder: Path, n_embd_out: int = 576) -> Path:
    """The tiny mmproj for `n_embd_out` in `folder`: built on the first call, reused afterwards."""
    path = Path(folder) / f"tiny-mmproj-{n_embd_out}-v{FORMAT_VERSION}.gguf"
    if not path.is_file():
        build_tiny_mmproj(path, n_embd_out=n_embd_out)
    return path
