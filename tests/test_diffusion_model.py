"""DiffusionModel on tiny random pipelines (CPU, 64x64, 2-4 steps): modes, seeds, LoRA, safety, OOM, cancel."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.runtime.diffusion import (
    BlankImage,
    Cancelled,
    ClipSafetyChecker,
    DiffusionModel,
    GenerationFailed,
    InvalidRequest,
    ModelNotAvailable,
    SafetyBlocked,
    is_spoiler,
    png_bytes,
    read_png_meta,
)
from engine.runtime.managed import Managed


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def run(model: DiffusionModel, **fields) -> list[Image.Image]:
    fields = {"prompt": "a red fox in snow", "seed": 7, "safety": "off"} | fields
    return model.generate(model.request(**fields))


def test_model_is_managed_and_estimates_from_files(tiny_sd_model, tiny_sd_path) -> None:
    assert isinstance(tiny_sd_model, Managed)
    assert tiny_sd_model.kind == "diffusion" and tiny_sd_model.loaded
    on_disk = sum(f.stat().st_size for f in tiny_sd_path.rglob("*.safetensors"))
    est = tiny_sd_model.estimate_bytes()
    assert 0.5 * on_disk < est < 2.0 * on_disk  # fp16 on cuda + working memory + checker


def test_load_unload_cycle_and_generate_requires_load(tiny_sd_path, tiny_settings) -> None:
    model = DiffusionModel(
        {"name": "cycle", "model": str(tiny_sd_path), "family": "sd15"}, tiny_settings, None
    )
    with pytest.raises(GenerationFailed, match="not loaded"):
        run(model, width=64, height=64, steps=2)
    model.load("cpu")
    model.load("cpu")  # idempotent
    first = run(model, width=64, height=64, steps=2)[0]
    model.unload()
    assert not model.loaded and model._pipes == {}
    model.load("cpu")
    assert np.array_equal(
        px(first), px(run(model, width=64, height=64, steps=2)[0])
    )  # same pixels after reload
    model.close()
    assert not model.loaded


def test_missing_model_names_preset_and_path(tmp_path, tiny_settings) -> None:
    missing = tmp_path / "nowhere" / "model"
    model = DiffusionModel({"name": "ghost", "model": str(missing), "family": "sd15"}, tiny_settings, None)
    with pytest.raises(ModelNotAvailable, match=rf"image preset 'ghost'.*{missing}"):
        model.load("cpu")
    with pytest.raises(ModelNotAvailable, match="ghost"):
        model.estimate_bytes()


def test_same_seed_same_pixels_different_seed_differs(tiny_sd_model) -> None:
    a = run(tiny_sd_model, seed=11)[0]
    b = run(tiny_sd_model, seed=11)[0]
    c = run(tiny_sd_model, seed=12)[0]
    assert a.size == (64, 64)
    assert np.array_equal(px(a), px(b))
    assert np.abs(px(a) - px(c)).mean() > 5
    assert a.info["atelier_seed"] == 11


def test_batch_image_i_equals_single_run_with_seed_plus_i(tiny_sd_model) -> None:
    batch = run(tiny_sd_model, seed=100, batch=3, scheduler="euler_a")
    assert [im.info["atelier_seed"] for im in batch] == [100, 101, 102]
    for i, im in enumerate(batch):
        alone = run(tiny_sd_model, seed=100 + i, scheduler="euler_a")[0]
        assert np.abs(px(im) - px(alone)).max() <= 2  # batched float math may differ by a rounding step


def test_every_named_scheduler_runs(tiny_sd_model) -> None:
    from engine.runtime.diffusion import SCHEDULERS

    outs = {name: px(run(tiny_sd_model, steps=3, scheduler=name)[0]) for name in SCHEDULERS}
    assert all(o.std() > 5 for o in outs.values())
    assert not np.array_equal(outs["euler"], outs["ddim"])


def test_negative_prompt_and_cfg_change_output(tiny_sd_model) -> None:
    base = px(run(tiny_sd_model, negative="")[0])
    assert not np.array_equal(base, px(run(tiny_sd_model, negative="blurry, dark")[0]))
    assert not np.array_equal(base, px(run(tiny_sd_model, cfg=1.0)[0]))


def test_img2img_changes_image_more_with_higher_strength(tiny_sd_model) -> None:
    source = run(tiny_sd_model, seed=1)[0]

    def i2i(strength: float, seed: int) -> np.ndarray:
        return px(run(tiny_sd_model, init_image=source, strength=strength, seed=seed)[0])

    low_a, low_b = i2i(0.25, 2), i2i(0.25, 3)
    high_a, high_b = i2i(1.0, 2), i2i(1.0, 3)
    assert not np.array_equal(low_a, px(source))
    assert not np.array_equal(low_a, high_a)
    # with more strength, more of the image comes from the noise: two seeds drift further apart
    assert np.abs(high_a - high_b).mean() > 3 * np.abs(low_a - low_b).mean()


def test_inpaint_keeps_far_pixels_and_changes_masked_region(tiny_sd_model) -> None:
    source = run(tiny_sd_model, seed=1)[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = px(run(tiny_sd_model, init_image=source, mask_image=mask, strength=1.0, seed=5)[0])
    diff = np.abs(out - px(source))
    assert diff[:8].max() <= 1 and diff[:, :8].max() <= 1 and diff[56:].max() <= 1
    assert diff[20:44, 20:44].mean() > 10


def test_lora_changes_output_and_unload_restores_exactly(tiny_sd_model, tiny_lora_path) -> None:
    base = px(run(tiny_sd_model)[0])
    full = px(run(tiny_sd_model, loras=[(str(tiny_lora_path), 1.0)])[0])
    half = px(run(tiny_sd_model, loras=[(str(tiny_lora_path), 0.5)])[0])
    assert np.abs(full - base).mean() > 3
    assert 0 < np.abs(half - base).mean() < np.abs(full - base).mean()
    restored = px(run(tiny_sd_model)[0])
    assert tiny_sd_model.loras.loaded == {}
    assert np.array_equal(restored, base)


def test_missing_lora_is_model_not_available(tiny_sd_model, tmp_path) -> None:
    with pytest.raises(ModelNotAvailable, match="LoRA"):
        run(tiny_sd_model, loras=[(str(tmp_path / "nope.safetensors"), 1.0)])


def test_progress_sees_every_step_and_previews_every_n(tiny_sd_model) -> None:
    seen: list[tuple[int, int, Image.Image | None]] = []
    tiny_sd_model.generate(
        tiny_sd_model.request(prompt="x", steps=4, seed=3, safety="off"), progress=lambda *a: seen.append(a)
    )
    assert [(s, t) for s, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    previews = [s for s, _, p in seen if p is not None]
    assert previews == [2, 4]  # tiny_settings: preview_every_steps = 2
    assert seen[1][2].size == (64, 64)


def test_cancel_raises_at_next_step_boundary(tiny_sd_model) -> None:
    steps: list[int] = []
    req = tiny_sd_model.request(prompt="x", steps=6, safety="off")
    with pytest.raises(Cancelled):
        tiny_sd_model.generate(
            req, progress=lambda s, t, p: steps.append(s), should_cancel=lambda: len(steps) >= 2
        )
    assert steps == [1, 2]
    with pytest.raises(Cancelled, match="before the first step"):
        tiny_sd_model.generate(req, should_cancel=lambda: True)


def test_family_mismatch_and_limits_are_checked_in_generate(tiny_sd_model) -> None:
    from engine.runtime.diffusion import GenerationRequest

    with pytest.raises(InvalidRequest, match="preset tiny-sd is sd15"):
        tiny_sd_model.generate(GenerationRequest(prompt="x", width=64, height=64, steps=2, family="sdxl"))
    with pytest.raises(InvalidRequest, match="maximum side"):
        tiny_sd_model.generate(GenerationRequest(prompt="x", width=1024, height=64, steps=2))


def test_oom_injection_falls_back_in_order_and_returns_every_image(
    tiny_sd_model, monkeypatch, caplog
) -> None:
    expected = [px(im) for im in run(tiny_sd_model, seed=30, batch=2, steps=2)]
    real = DiffusionModel._call_pipeline
    calls: list[int] = []

    def flaky(self, pipe, kwargs):
        calls.append(kwargs["num_images_per_prompt"])
        if len(calls) <= 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, pipe, kwargs)

    monkeypatch.setattr(DiffusionModel, "_call_pipeline", flaky)
    caplog.set_level(logging.WARNING, logger="atelier.engine")
    out = run(tiny_sd_model, seed=30, batch=2, steps=2)
    assert tiny_sd_model.last_fallbacks == ["batch 2->1", "vae_tiling", "cpu_offload"]
    assert calls == [2, 1, 1, 1, 1]
    assert [im.info["atelier_seed"] for im in out] == [30, 31]
    for got, want in zip(out, expected, strict=True):
        assert np.abs(px(got) - want).max() <= 2
    assert len([r for r in caplog.records if "out of memory" in r.message]) == 3
    assert tiny_sd_model._pipes["txt2img"].vae.use_tiling
    tiny_sd_model.unload()  # reset the degraded modes for later tests
    tiny_sd_model.load("cpu")


def test_oom_every_time_raises_generation_failed(tiny_sd_model, monkeypatch) -> None:
    def always(self, pipe, kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(DiffusionModel, "_call_pipeline", always)
    with pytest.raises(GenerationFailed, match=r"out of memory generating 64x64 batch 1 .*cpu_offload"):
        run(tiny_sd_model, steps=2)
    tiny_sd_model.unload()
    tiny_sd_model.load("cpu")


def test_nan_output_is_blank_image_error(tiny_sd_model, monkeypatch) -> None:
    def nan_pipe(self, pipe, kwargs):
        n = kwargs["num_images_per_prompt"]
        images = np.random.default_rng(0).random((n, 64, 64, 3), dtype=np.float32)
        images[1] = np.nan
        return SimpleNamespace(images=images)

    monkeypatch.setattr(DiffusionModel, "_call_pipeline", nan_pipe)
    with pytest.raises(BlankImage, match=r"image 2 \(seed 9\) contains NaN"):
        run(tiny_sd_model, seed=8, batch=2, steps=2)


def _spy(checker, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = checker.check

    def check(images):
        calls.append(len(images))
        return real(images)

    monkeypatch.setattr(checker, "check", check)
    return calls


@pytest.mark.parametrize("model_fixture", ["tiny_sd_model", "tiny_sdxl_model"])
def test_tiny_checker_runs_for_every_family(model_fixture, request, monkeypatch) -> None:
    model = request.getfixturevalue(model_fixture)
    assert isinstance(model.safety, ClipSafetyChecker)
    calls = _spy(model.safety, monkeypatch)
    out = run(model, batch=2, steps=2, safety="block")
    assert calls == [2] and len(out) == 2 and not any(is_spoiler(im) for im in out)
    run(model, steps=2, safety="off")
    assert calls == [2]


@pytest.mark.parametrize("model_fixture", ["tiny_sd_model", "tiny_sdxl_model"])
def test_checker_verdict_drives_block_and_spoiler(model_fixture, request) -> None:
    model = request.getfixturevalue(model_fixture)
    weights = model.safety._model.concept_embeds_weights  # shared session model: restore in place
    saved = weights.detach().clone()
    with torch.no_grad():
        weights.fill_(-2.0)  # every concept scores > 0
    try:
        with pytest.raises(SafetyBlocked, match=r"policy: block.*image 1 \(seed 7\)") as ei:
            run(model, steps=2, safety="block")
        assert ei.value.delivered == []
        out = run(model, steps=2, safety="spoiler")
        assert is_spoiler(out[0])
        assert not is_spoiler(run(model, steps=2, safety="off")[0])
    finally:
        with torch.no_grad():
            weights.copy_(saved)


def test_sdxl_is_deterministic_and_does_img2img_and_inpaint(tiny_sdxl_model) -> None:
    a = px(run(tiny_sdxl_model, seed=4, steps=3)[0])
    assert np.array_equal(a, px(run(tiny_sdxl_model, seed=4, steps=3)[0]))
    assert not np.array_equal(a, px(run(tiny_sdxl_model, seed=5, steps=3)[0]))
    src = Image.fromarray(a.astype(np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    i2i = px(run(tiny_sdxl_model, init_image=src, strength=0.5, steps=4)[0])
    inp = px(run(tiny_sdxl_model, init_image=src, mask_image=mask, strength=1.0, steps=2)[0])
    assert not np.array_equal(i2i, a)
    assert np.abs(inp - a)[:8].max() <= 1 and np.abs(inp - a)[26:38, 26:38].mean() > 10


def test_upscale_2x_tiled_gives_double_size(tiny_sd_model) -> None:
    source = run(tiny_sd_model, seed=2)[0]
    tiles: list[tuple[int, int]] = []
    big = tiny_sd_model.upscale(
        source, 2, "a red fox", seed=3, steps=4, strength=0.5, tile=64, overlap=16, safety="off",
        progress=lambda i, n, _: tiles.append((i, n)),
    )  # fmt: skip
    assert big.size == (128, 128)
    assert tiles == [(i, 9) for i in range(1, 10)]
    lanczos = px(source.resize((128, 128), Image.Resampling.LANCZOS))
    assert np.abs(px(big) - lanczos).mean() > 1  # the img2img pass really ran
    with pytest.raises(InvalidRequest, match="factor must be one of"):
        tiny_sd_model.upscale(source, 3, "x", seed=1)
    with pytest.raises(InvalidRequest, match="exceed the maximum side"):
        tiny_sd_model.upscale(source.resize((256, 256)), 4, "x", seed=1)


def test_generated_png_carries_reproducible_metadata(tiny_sd_model) -> None:
    req = tiny_sd_model.request(prompt="a lighthouse, dusk", negative="fog", seed=77, steps=3, safety="off")
    image = tiny_sd_model.generate(req)[0]
    meta = {
        "prompt": req.prompt,
        "negative": req.negative,
        "seed": 77,
        "model": "tiny-sd",
        "params": req.params(),
    }
    back = read_png_meta(png_bytes(image, meta))["atelier"]
    assert back["seed"] == 77 and back["params"]["steps"] == 3
    again = tiny_sd_model.request(prompt=back["prompt"], negative=back["negative"], seed=back["seed"], **{
        k: back["params"][k] for k in ("steps", "cfg", "scheduler", "width", "height")
    }, safety="off")  # fmt: skip
    assert np.array_equal(px(tiny_sd_model.generate(again)[0]), px(image))


@pytest.mark.parametrize("factor", [2, 4])
def test_configured_upscaler_model_gives_exact_size(tiny_sd_model, tiny_upscaler_path, factor) -> None:
    from engine.runtime.diffusion import UpscalerModel

    upscaler = UpscalerModel(str(tiny_upscaler_path))
    source = run(tiny_sd_model, seed=2, width=32, height=32)[0]
    with pytest.raises(GenerationFailed, match="not loaded"):
        tiny_sd_model.upscale(source, factor, "x", seed=1, upscaler=upscaler)
    upscaler.load("cpu")
    big = tiny_sd_model.upscale(source, factor, "a red fox", seed=1, upscaler=upscaler, steps=2, safety="off")
    assert big.size == (32 * factor, 32 * factor)
    again = tiny_sd_model.upscale(
        source, factor, "a red fox", seed=1, upscaler=upscaler, steps=2, safety="off"
    )
    assert np.array_equal(px(big), px(again))
    upscaler.close()
    assert not upscaler.loaded


def test_unreachable_hub_id_names_preset_and_id(tiny_settings, monkeypatch) -> None:
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(f"offline: {repo_id}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    model = DiffusionModel(
        {"name": "hubby", "model": "someorg/some-model", "family": "sdxl"}, tiny_settings, None
    )
    assert model.estimate_bytes() > 1_000_000_000  # family default before download
    with pytest.raises(ModelNotAvailable, match=r"image preset 'hubby'.*'someorg/some-model'.*hub"):
        model.load("cpu")


def test_the_pipeline_runs_in_inference_mode_and_repeats_its_pixels(tiny_sd_model, monkeypatch) -> None:
    unet = type(tiny_sd_model._pipes["txt2img"].unet)
    real, seen = unet.forward, []

    def spy(self, *args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", spy)
    first = run(tiny_sd_model, seed=5, steps=2)[0]
    assert seen and all(seen)  # no autograd bookkeeping in any denoising step
    assert np.array_equal(px(first), px(run(tiny_sd_model, seed=5, steps=2)[0]))
    assert not torch.is_inference_mode_enabled()  # the mode ends with the call
