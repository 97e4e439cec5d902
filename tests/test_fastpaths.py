"""Opt-in fast paths (engine/runtime/diffusion/fastpaths.py) on the tiny SD pipeline, CPU fp32: each agrees with
the plain path within fastpaths.TOLERANCE uint8 levels, or is off by default; hot-swap does not recompile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import Gpu, Settings
from engine.runtime.arbiter import Arbiter
from engine.runtime.diffusion import DiffusionModel, fastpaths
from engine.runtime.diffusion.testmodels import write_tiny_lora

TOL = fastpaths.TOLERANCE


def make(path: Path, settings: Settings, **gpu: object) -> DiffusionModel:
    preset = {"name": "fast", "model": str(path), "family": "sd15", "steps": 3, "cfg": 5.0}
    preset |= {"width": 64, "height": 64}
    model = DiffusionModel(preset, settings.model_copy(update={"gpu": Gpu(**gpu)}), None)
    model.load("cpu")
    return model


def gen(model: DiffusionModel, **fields: object) -> np.ndarray:
    fields = {"prompt": "a red fox in snow", "seed": 7, "safety": "off"} | fields
    return np.asarray(model.generate(model.request(**fields))[0], dtype=np.int16)


def diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


@pytest.fixture(scope="module")
def plain(tiny_sd_path, tiny_settings):
    model = make(tiny_sd_path, tiny_settings)
    yield model
    model.close()


@pytest.fixture(scope="module")
def lora_b(tiny_models_dir, tiny_sd_path) -> Path:
    return write_tiny_lora(tiny_sd_path, tiny_models_dir / "tiny-lora-b", seed=2)


@pytest.fixture
def counted(monkeypatch):
    """Replace the compile backend by one that counts graph compilations (and runs them eagerly)."""
    calls: list[int] = []

    def backend(gm, example_inputs):
        calls.append(1)
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(fastpaths, "BACKEND", backend)
    yield calls
    torch._dynamo.reset()


def test_defaults_apply_nothing(plain) -> None:
    assert Gpu().compile is False and Gpu().vae_tiling_over_px is None and Gpu().attention == "sdpa"
    assert plain.fast == set() and plain.warmup_s == 0.0
    assert not plain._pipes["txt2img"].vae.use_tiling


@pytest.mark.parametrize(
    ("gpu", "name"),
    [({"attention": "default"}, "attention_default"), ({"channels_last": True}, "channels_last")],
)
def test_path_agrees_with_plain(plain, tiny_sd_path, tiny_settings, tiny_lora_path, gpu, name) -> None:
    model = make(tiny_sd_path, tiny_settings, **gpu)
    try:
        assert model.fast == {name}
        assert diff(gen(model), gen(plain)) <= TOL
        lora = [(str(tiny_lora_path), 1.0)]
        assert diff(gen(model, loras=lora), gen(plain, loras=lora)) <= TOL
        if name == "channels_last":
            conv = model._pipes["txt2img"].unet.conv_in.weight
            assert conv.is_contiguous(memory_format=torch.channels_last)
        else:
            procs = model._pipes["txt2img"].unet.attn_processors.values()
            assert {type(p).__name__ for p in procs} == {"AttnProcessor"}
    finally:
        model.close()


def test_fused_qkv_agrees_and_unfuses_for_loras(plain, tiny_sd_path, tiny_settings, tiny_lora_path) -> None:
    model = make(tiny_sd_path, tiny_settings, fuse_qkv=True)
    pipe = model._pipes["txt2img"]
    try:
        assert model.fast == {"fuse_qkv"} and pipe.fusing_unet
        assert diff(gen(model), gen(plain)) <= TOL
        lora = [(str(tiny_lora_path), 1.0)]
        with_lora = gen(model, loras=lora)
        assert not pipe.fusing_unet  # LoRA layers target to_q/to_k/to_v: they must be in use
        assert diff(with_lora, gen(plain, loras=lora)) <= TOL
        assert diff(with_lora, gen(plain)) > TOL  # the LoRA really acted
        assert diff(gen(model), gen(plain)) <= TOL and pipe.fusing_unet  # fused again without LoRAs
    finally:
        model.close()


def test_vae_tiling_only_above_threshold_and_why_it_is_off(plain, tiny_sd_path, tiny_settings) -> None:
    model = make(tiny_sd_path, tiny_settings, vae_tiling_over_px=64 * 64)
    vae = model._pipes["txt2img"].vae
    try:
        assert np.array_equal(gen(model), gen(plain)) and not vae.use_tiling
        tiled = gen(model, width=128, height=128)
        assert vae.use_tiling
        # blended tiles move pixels beyond the tolerance: this is why vae_tiling_over_px is null by default
        assert diff(tiled, gen(plain, width=128, height=128)) > TOL
        gen(model)
        assert not vae.use_tiling
    finally:
        model.close()


def test_lora_hotswap_agrees_and_does_not_recompile(
    plain, tiny_sd_path, tiny_settings, tiny_lora_path, lora_b, counted
) -> None:
    model = make(tiny_sd_path, tiny_settings, lora_hotswap=True, compile=True)
    a, b = [(str(tiny_lora_path), 1.0)], [(str(lora_b), 0.7)]
    try:
        assert model.fast == {"lora_hotswap", "compile"}
        assert len(counted) >= 1  # compiled and warmed inside load()
        at_load = len(counted)
        first_round = [gen(model, loras=a)]
        # documented limit (gpu.lora_hotswap): the first LoRA adds the adapter layers, so it recompiles once
        assert len(counted) > at_load
        first_round += [gen(model, loras=b), gen(model)]
        compiles = len(counted)
        second_round = [gen(model, loras=a), gen(model, loras=b), gen(model)]
        assert len(counted) == compiles  # swapping LoRAs in place: no recompilation
        assert model.loras.slots == ["lora0"]
        for got in (first_round, second_round):
            assert diff(got[0], gen(plain, loras=a)) <= TOL
            assert diff(got[1], gen(plain, loras=b)) <= TOL
            assert diff(got[2], gen(plain)) <= TOL
        assert diff(second_round[0], second_round[1]) > TOL
    finally:
        model.close()
    assert model.loras.slots == [] and model.fast == set()


async def test_compile_warm_up_counts_in_the_arbiters_load(tiny_sd_path, tiny_settings, counted) -> None:
    preset = {"name": "fast-arb", "model": str(tiny_sd_path), "family": "sd15", "cfg": 5.0}
    preset |= {"width": 64, "height": 64}
    model = DiffusionModel(preset, tiny_settings.model_copy(update={"gpu": Gpu(compile=True)}), None)
    assert model.warmup_s == fastpaths.WARMUP_GUESS_S["sd15"]
    arbiter = Arbiter(Gpu(compile=True), device="cpu", budget_bytes=4 << 30)
    arbiter.register(model)
    events = []
    arbiter.subscribe(events.append)
    async with arbiter.use("fast-arb"):
        assert counted, "the denoiser was compiled inside load(), before any generation"
    loading = next(e for e in events if e.kind == "loading")
    assert loading.eta_s >= fastpaths.WARMUP_GUESS_S["sd15"]
    snap = next(m for m in arbiter.snapshot() if m["name"] == "fast-arb")
    assert snap["last_load_s"] is not None  # the measured load (warm-up included) replaces the guess
    await arbiter.close()


def test_inductor_compile_agrees_with_plain(plain, tiny_sd_path, tiny_settings) -> None:
    """The real torch.compile (inductor, CPU C++ kernels; takes minutes on 2 cores)."""
    torch._dynamo.reset()
    model = make(tiny_sd_path, tiny_settings, compile=True)
    try:
        assert "compile" in model.fast
        assert diff(gen(model), gen(plain)) <= TOL
    finally:
        model.close()
        torch._dynamo.reset()
