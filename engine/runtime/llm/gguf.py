"""Read the few GGUF header values we need to estimate a model's memory without loading it."""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import BinaryIO

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_WANTED = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv")
_WANTED_OPT = ("attention.key_length", "attention.value_length")
FALLBACK_KV_BYTES_PER_TOKEN = 256 * 1024


class GgufError(ValueError):
    """The file is not a GGUF we can read."""


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise GgufError("unexpected end of GGUF header")
    return struct.unpack(fmt, raw)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    if n > 1 << 24:
        raise GgufError("GGUF string too long")
    return f.read(n).decode("utf-8", "replace")


def _value(f: BinaryIO, vtype: int, keep: bool):
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        itype, count = _read(f, "<I"), _read(f, "<Q")
        if itype in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[itype]) * count, 1)
        else:
            for _ in range(count):
                _value(f, itype, False)
        return count  # arrays: only their length is kept
    raise GgufError(f"unknown GGUF value type {vtype}")


def read_metadata(path: str | Path) -> dict:
    """Scalar/string header values, arrays as their length; stops once the architecture keys are known."""
    meta: dict = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GgufError(f"{path} is not a GGUF file")
        version = _read(f, "<I")
        count_fmt = "<I" if version == 1 else "<Q"
        _read(f, count_fmt)  # tensor count
        n_kv = _read(f, count_fmt)
        for _ in range(n_kv):
            key = _string(f)
            meta[key] = _value(f, _read(f, "<I"), True)
            arch = meta.get("general.architecture")
            if arch and "tokenizer.ggml.tokens" in meta and all(f"{arch}.{k}" in meta for k in _WANTED):
                break
    return meta


def kv_bytes_per_token(meta: dict) -> int:
    """f16 K+V bytes per context token: 2 * layers * kv_heads * head_dim * 2 bytes."""
    arch = meta.get("general.architecture")
    if not arch or not all(f"{arch}.{k}" in meta for k in _WANTED):
        return FALLBACK_KV_BYTES_PER_TOKEN
    layers, embd = meta[f"{arch}.block_count"], meta[f"{arch}.embedding_length"]
    heads, kv_heads = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    if isinstance(kv_heads, int) and not isinstance(heads, int):
        heads = kv_heads
    k_dim = meta.get(f"{arch}.attention.key_length", embd // max(1, heads))
    v_dim = meta.get(f"{arch}.attention.value_length", k_dim)
    return int(layers * kv_heads * (k_dim + v_dim) * 2)


def safe_metadata(path: Path) -> dict:
    """read_metadata (cached per file version), or {} when the header cannot be read (estimates use fallbacks)."""
    try:
        st = os.stat(path)
        return dict(_cached_metadata(str(path), st.st_size, st.st_mtime_ns))
    except (GgufError, OSError, UnicodeDecodeError):
        return {}


@functools.lru_cache(maxsize=64)
def _cached_metadata(path: str, size: int, mtime_ns: int) -> dict:
    """The arbiter asks for estimates on every load; parsing a 49k-token vocabulary costs ~20 ms."""
    return read_metadata(path)


# Bytes per cached K/V value relative to f16: q8_0 stores blocks of 32 values in 34 bytes (vs 64).
KV_TYPE_FACTOR = {"f16": 1.0, "q8_0": 34 / 64}
# llama.cpp's ggml_type ids for Llama(type_k=..., type_v=...)
GGML_KV_TYPES = {"f16": 1, "q8_0": 8}
FALLBACK_LAYERS = 32


def offload_share(meta: dict, n_gpu_layers: int, gpu_offload: bool = True) -> float:
    """The share of the model llama.cpp puts on the GPU: n_gpu_layers of the block layers (-1 = all)."""
    if not gpu_offload or n_gpu_layers == 0:
        return 0.0
    if n_gpu_layers < 0:
        return 1.0
    arch = meta.get("general.architecture")
    layers = meta.get(f"{arch}.block_count") if arch else None
    layers = layers if isinstance(layers, int) and layers > 0 else FALLBACK_LAYERS
    return min(n_gpu_layers, layers) / layers


def estimate_llm_bytes(
    weights: int, meta: dict, n_ctx: int, n_batch: int = 512, *, kv_type: str = "f16", share: float = 1.0,
    host_logits: bool = True,
) -> int:  # fmt: skip
    """Bytes on the device: `share` of the weights (+5%) and of the KV cache (kv_type), a 32 MiB compute
    margin, plus the logits buffer when it lives there too (host_logits); 0 when nothing is offloaded."""
    if share <= 0:
        return 0
    kv = n_ctx * kv_bytes_per_token(meta) * KV_TYPE_FACTOR[kv_type]
    vocab = meta.get("tokenizer.ggml.tokens", 32000)
    logits = n_batch * int(vocab) * 4 if host_logits else 0
    return int(share * (weights * 1.05 + kv) + logits + 32 * 2**20)
