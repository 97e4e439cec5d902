"""Diffusion engine units that need no model: requests, aspects, PNG metadata, safety policy, OOM chain, tiling."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import Generation
from engine.runtime.diffusion import (
    ASPECTS,
    BASE_SIDE,
    GenerationFailed,
    GenerationRequest,
    InvalidRequest,
    SafetyBlocked,
    aspect_size,
    build_request,
    is_spoiler,
    png_bytes,
    read_png_meta,
    save_png,
)
from engine.runtime.diffusion.errors import BlankImage
from engine.runtime.diffusion.oom import is_oom, run_with_fallback
from engine.runtime.diffusion.safety import apply_policy, blank_reason, check_blank
from engine.runtime.diffusion.schedulers import lms_coefficient
from engine.runtime.diffusion.upscale import feather, tile_starts

GEN = Generation(max_pixels=512 * 512, max_side=768, max_steps=30)
PRESET = {"name": "p", "model": "x", "family": "sd15", "steps": 12, "cfg": 6.5, "negative": "ugly"}


class FlagDouble:
    """A safety checker test double returning fixed verdicts and counting calls."""

    def __init__(self, flags: list[bool]) -> None:
        self.flags, self.calls = flags, 0

    def load(self, device: str) -> None: ...

    def unload(self) -> None: ...

    def estimate_bytes(self) -> int:
        return 0

    def check(self, images: list[Image.Image]) -> list[bool]:
        self.calls += 1
        return self.flags[: len(images)]


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_aspect_sizes_match_ratio_and_budget(family: str, aspect: str) -> None:
    w, h = aspect_size(aspect, family)
    aw, ah = ASPECTS[aspect]
    base = BASE_SIDE[family]
    assert w % 8 == 0 and h % 8 == 0
    assert w * h <= base * base
    assert w * h >= 0.9 * base * base
    assert abs(w / h - aw / ah) < 0.03


def test_unknown_aspect_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="unknown aspect '5:4'"):
        aspect_size("5:4", "sd15")
    with pytest.raises(InvalidRequest, match="unknown aspect"):
        build_request(PRESET, GEN, aspect="21:9", prompt="x")


def test_build_request_fills_preset_defaults_and_aspect() -> None:
    req = build_request(PRESET, GEN, aspect="3:2", prompt="a fox")
    assert (req.width, req.height) == aspect_size("3:2", "sd15")
    assert (req.steps, req.cfg, req.negative) == (12, 6.5, "ugly")
    assert build_request(PRESET, GEN, prompt="a fox", steps=20, negative="").negative == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 100}, "multiple of 8"),
        ({"height": 0}, "multiple of 8"),
        ({"width": 768, "height": 768}, "exceeds the budget"),
        ({"width": 776, "height": 64}, "maximum side"),
        ({"steps": 31}, "31 steps exceeds the maximum of 30"),
        ({"scheduler": "dpm_fancy"}, "unknown scheduler 'dpm_fancy'"),
        ({"batch": 5}, "batch"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"mask_image": Image.new("L", (8, 8))}, "needs an init_image"),
        ({"init_image": Image.new("RGB", (8, 8)), "steps": 2, "strength": 0.3}, "no denoising step"),
        ({"loras": [("a.safetensors", 9.0)]}, "outside -4..4"),
    ],
)
def test_validation_errors_are_specific(fields: dict, message: str) -> None:
    data = {"prompt": "a fox", "width": 512, "height": 512} | fields
    with pytest.raises(InvalidRequest, match=message):
        build_request(PRESET, GEN, **data)


def test_flux_only_accepts_flow_schedulers() -> None:
    with pytest.raises(InvalidRequest, match="for flux"):
        build_request({**PRESET, "family": "flux", "scheduler": None}, GEN, prompt="x", scheduler="ddim")


def test_seeds_are_consecutive_per_image() -> None:
    req = GenerationRequest(prompt="x", seed=41, batch=3)
    assert req.seeds() == [41, 42, 43]
    assert GenerationRequest(prompt="x").seed >= 0  # a seed is always chosen, so it can be recorded


def test_png_metadata_round_trip(tmp_path) -> None:
    meta = {
        "prompt": "a cat, on a mat\nsecond line ✨",
        "negative": "blurry, low quality",
        "seed": 1234,
        "model": "tiny-sd",
        "params": {
            "steps": 4,
            "cfg": 7.5,
            "scheduler": "euler_a",
            "width": 64,
            "height": 48,
            "mode": "txt2img",
        },
    }
    path = tmp_path / "out.png"
    save_png(Image.new("RGB", (64, 48), "red"), path, meta)
    back = read_png_meta(path)
    assert back["atelier"] == meta
    params = back["parameters"]
    assert params["prompt"] == meta["prompt"]
    assert params["negative"] == meta["negative"]
    assert (params["Seed"], params["Steps"], params["Size"], params["Sampler"]) == (
        "1234",
        "4",
        "64x48",
        "euler_a",
    )
    with Image.open(path) as im:
        assert im.size == (64, 48)


def _idat(data: bytes) -> bytes:
    start = data.index(b"IDAT")
    return data[start + 4 : start + 4 + int.from_bytes(data[start - 4 : start], "big")]


def test_saved_pngs_use_the_faster_zlib_strategy_and_stay_lossless() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8)  # a smooth picture ...
    pixels[::7, ::5] = rng.integers(0, 256, pixels[::7, ::5].shape, dtype=np.uint8)  # ... with some grain
    data = png_bytes(Image.fromarray(pixels), {"prompt": "p"})
    idat = _idat(data)

    def encoded(**kw: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=4, **kw)
        return _idat(buf.getvalue())

    assert idat == encoded(compress_type=3) != encoded()  # zlib's Z_RLE strategy, not the default one
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels)


def test_png_without_metadata_reads_as_none(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert read_png_meta(tmp_path / "plain.png") == {"atelier": None, "parameters": None}


def test_blank_and_non_finite_images_are_detected() -> None:
    ok = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    flat = np.full((8, 8, 3), 0.4, dtype=np.float32)
    nan = ok.copy()
    nan[3, 3, 1] = np.nan
    inf = ok.copy()
    inf[0, 0, 0] = np.inf
    assert blank_reason(ok) is None
    assert "flat colour" in blank_reason(flat)
    assert "NaN/inf" in blank_reason(nan)
    assert "NaN/inf" in blank_reason(inf)
    with pytest.raises(BlankImage, match=r"image 2 \(seed 8\) is a single flat colour") as ei:
        check_blank([ok, flat], [7, 8])
    assert ei.value.withheld == [1]


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(n)]


def test_safety_policy_block_withholds_flagged_and_says_why() -> None:
    checker = FlagDouble([False, True, False])
    with pytest.raises(SafetyBlocked, match=r"policy: block.*image 2 \(seed 11\)") as ei:
        apply_policy(_images(3), [10, 11, 12], checker, "block")
    assert ei.value.withheld == [1]
    assert [im.info["atelier_seed"] for im in ei.value.delivered] == [10, 12]


def test_safety_policy_spoiler_flags_and_off_skips_checker() -> None:
    checker = FlagDouble([True, False])
    out = apply_policy(_images(2), [1, 2], checker, "spoiler")
    assert [is_spoiler(im) for im in out] == [True, False]
    off = FlagDouble([True, True])
    out = apply_policy(_images(2), [1, 2], off, "off")
    assert off.calls == 0 and not any(is_spoiler(im) for im in out)


def test_safety_policy_without_checker_refuses() -> None:
    with pytest.raises(SafetyBlocked, match="no safety checker"):
        apply_policy(_images(1), [1], None, "spoiler")


def test_is_oom_recognises_torch_and_runtime_messages() -> None:
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def _oom_chain(fail_times: int, seeds: list[int]):
    calls: list[list[int]] = []
    steps: list[str] = []

    def run(part: list[int]) -> list[int]:
        calls.append(part)
        if len(calls) <= fail_times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return [s * 10 for s in part]

    record: list[str] = []
    out = run_with_fallback(
        run,
        seeds,
        vae_low_memory=lambda: steps.append("vae"),
        cpu_offload=lambda: steps.append("offload"),
        what="64x64 batch 4",
        record=record,
    )
    return out, calls, steps, record


def test_oom_halves_batch_and_keeps_every_seed(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.engine")
    out, calls, steps, record = _oom_chain(2, [5, 6, 7, 8])
    assert out == [50, 60, 70, 80]
    assert calls == [[5, 6, 7, 8], [5, 6], [5], [6], [7], [8]]
    assert record == ["batch 4->2", "batch 2->1"] and steps == []
    assert sum("out of memory" in r.message for r in caplog.records) == 2


def test_oom_then_vae_tiling_then_offload_then_fails() -> None:
    out, calls, steps, record = _oom_chain(3, [1, 2])
    assert out == [10, 20]
    assert record == ["batch 2->1", "vae_tiling", "cpu_offload"] and steps == ["vae", "offload"]
    with pytest.raises(
        GenerationFailed, match=r"out of memory generating 64x64 batch 4, even after batch 2->1"
    ):
        _oom_chain(4, [1, 2])


def test_non_oom_errors_propagate_unchanged() -> None:
    def run(part: list[int]) -> list[int]:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run_with_fallback(run, [1], vae_low_memory=lambda: None, cpu_offload=lambda: None, what="x")


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(128, 64, 16), (64, 64, 16), (1024, 512, 64), (136, 64, 8)]
)
def test_tiles_cover_length_with_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(s % 8 == 0 for s in starts)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_feather_ramps_only_on_interior_edges() -> None:
    w = feather(32, 16, 8, (True, False, False, True))[..., 0]
    assert w[0, 31] == 1.0 and w[0, 16] == 1.0  # right and top edges are image borders
    assert w[4, 0] < w[4, 4] < w[4, 8] == 1.0  # left edge ramps
    assert w[15, 16] < w[12, 16]  # bottom edge ramps


def test_lms_coefficient_matches_numeric_integral() -> None:
    sig, t = [14.6, 7.1, 3.2, 1.4, 0.5], 3
    for order in (1, 2, 3):
        for cur in range(order):

            def basis(tau: np.ndarray, order: int = order, cur: int = cur) -> np.ndarray:
                prod = np.ones_like(tau)
                for k in range(order):
                    if k != cur:
                        prod *= (tau - sig[t - k]) / (sig[t - cur] - sig[t - k])
                return prod

            xs = np.linspace(sig[t], sig[t + 1], 20001)
            numeric = float(np.sum((basis(xs[1:]) + basis(xs[:-1])) / 2 * np.diff(xs)))
            assert lms_coefficient(sig, order, t, cur) == pytest.approx(numeric, rel=1e-6)
