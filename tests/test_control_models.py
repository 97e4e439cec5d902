"""The tiny ControlNet / IP-Adapter test models work with raw diffusers pipelines and visibly steer the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.runtime.diffusion.testmodels_control import (
    ensure_control_demo_models,
    ensure_tiny_controlnet,
    ensure_tiny_ip_adapter,
)

VISIBLE = 0.01  # mean absolute pixel difference (0..1 scale) that counts as a visible change


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny 64x64 models run faster on one thread, and far faster when other test runs share the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def control_models(tiny_models_dir: Path, tiny_sd_path: Path, tiny_sdxl_path: Path) -> dict[str, Path]:
    """The four tiny control models, built once into the shared tiny-model cache."""
    return ensure_control_demo_models(tiny_models_dir, tiny_sd_path, tiny_sdxl_path)


def _pipe(family: str, sd: Path, sdxl: Path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sd15":
        pipe = StableDiffusionPipeline.from_pretrained(sd, safety_checker=None)
    else:
        pipe = StableDiffusionXLPipeline.from_pretrained(sdxl)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _net(path: Path):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(path)


def _run(pipe, **kw) -> np.ndarray:
    generator = torch.Generator().manual_seed(1)
    out = pipe(
        prompt="a red cat",
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=5.0,
        generator=generator,
        output_type="np",
        **kw,
    )
    return out.images[0]


def _shape(kind: str) -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    draw = ImageDraw.Draw(image)
    if kind == "square":
        draw.rectangle([8, 8, 40, 40], fill="white")
    else:
        draw.ellipse([24, 24, 60, 60], fill="white")
    return image


def _noise(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _load_ip(pipe, path: Path) -> None:
    pipe.load_ip_adapter(
        str(path), subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder="image_encoder"
    )


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_controlnet_image_and_scale_steer_output(family, control_models, tiny_sd_path, tiny_sdxl_path):
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    base = _pipe(family, tiny_sd_path, tiny_sdxl_path)
    cls = StableDiffusionControlNetPipeline if family == "sd15" else StableDiffusionXLControlNetPipeline
    pipe = cls.from_pipe(base, controlnet=_net(control_models[f"controlnet-{family}"]))
    square, circle = _run(pipe, image=_shape("square")), _run(pipe, image=_shape("circle"))
    assert _diff(square, circle) > VISIBLE
    assert np.array_equal(square, _run(pipe, image=_shape("square")))
    plain = _run(base)
    assert _diff(square, plain) > VISIBLE
    assert np.array_equal(_run(pipe, image=_shape("square"), controlnet_conditioning_scale=0.0), plain)
    half = _run(pipe, image=_shape("square"), controlnet_conditioning_scale=0.5)
    assert _diff(half, square) > VISIBLE and _diff(half, plain) > VISIBLE


def test_multi_controlnet_per_net_scale(control_models, tiny_sd_path, tiny_sdxl_path):
    from diffusers import StableDiffusionControlNetPipeline

    base = _pipe("sd15", tiny_sd_path, tiny_sdxl_path)
    path = control_models["controlnet-sd15"]
    multi = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=[_net(path), _net(path)])
    images = [_shape("square"), _shape("circle")]
    first = _run(multi, image=images, controlnet_conditioning_scale=[1.0, 0.0])
    second = _run(multi, image=images, controlnet_conditioning_scale=[0.0, 1.0])
    assert _diff(first, second) > VISIBLE
    single = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=_net(path))
    assert np.array_equal(first, _run(single, image=_shape("square")))
    assert np.array_equal(second, _run(single, image=_shape("circle")))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_ip_adapter_reference_steers_and_unloads_cleanly(
    family, control_models, tiny_sd_path, tiny_sdxl_path
):
    pipe = _pipe(family, tiny_sd_path, tiny_sdxl_path)
    before = _run(pipe)
    _load_ip(pipe, control_models[f"ip-adapter-{family}"])
    assert pipe.image_encoder is not None
    pipe.set_ip_adapter_scale(0.8)
    first, second = _run(pipe, ip_adapter_image=_noise(5)), _run(pipe, ip_adapter_image=_noise(6))
    assert _diff(first, second) > VISIBLE
    assert _diff(first, before) > VISIBLE
    assert np.array_equal(first, _run(pipe, ip_adapter_image=_noise(5)))
    pipe.set_ip_adapter_scale(0.0)
    assert np.array_equal(_run(pipe, ip_adapter_image=_noise(5)), before)
    pipe.unload_ip_adapter()
    assert pipe.image_encoder is None
    assert np.array_equal(_run(pipe), before)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_ip_adapter_with_controlnet(family, control_models, tiny_sd_path, tiny_sdxl_path):
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    pipe = _pipe(family, tiny_sd_path, tiny_sdxl_path)
    _load_ip(pipe, control_models[f"ip-adapter-{family}"])
    pipe.set_ip_adapter_scale(0.8)
    cls = StableDiffusionControlNetPipeline if family == "sd15" else StableDiffusionXLControlNetPipeline
    both = cls.from_pipe(pipe, controlnet=_net(control_models[f"controlnet-{family}"]))
    first = _run(both, image=_shape("square"), ip_adapter_image=_noise(5))
    other_ref = _run(both, image=_shape("square"), ip_adapter_image=_noise(6))
    other_control = _run(both, image=_shape("circle"), ip_adapter_image=_noise(5))
    assert _diff(first, other_ref) > VISIBLE
    assert _diff(first, other_control) > VISIBLE


def test_ip_adapter_style_only_scale_targets_first_up_block(control_models, tiny_sd_path, tiny_sdxl_path):
    pipe = _pipe("sd15", tiny_sd_path, tiny_sdxl_path)
    _load_ip(pipe, control_models["ip-adapter-sd15"])
    pipe.set_ip_adapter_scale(0.8)
    full = _run(pipe, ip_adapter_image=_noise(5))
    pipe.set_ip_adapter_scale({"up": {"block_0": 0.8}})
    scales = {name: proc.scale for name, proc in pipe.unet.attn_processors.items() if "attn2" in name}
    assert {name for name, s in scales.items() if s == [0.8]} == {
        name for name in scales if name.startswith("up_blocks.0.")
    }
    assert all(s in ([0.8], [0.0]) for s in scales.values())
    style = _run(pipe, ip_adapter_image=_noise(5))
    assert _diff(style, full) > VISIBLE
    assert _diff(style, _run(pipe, ip_adapter_image=_noise(6))) > VISIBLE


def test_ip_adapter_with_lora(control_models, tiny_sd_path, tiny_sdxl_path, tiny_lora_path):
    pipe = _pipe("sd15", tiny_sd_path, tiny_sdxl_path)
    _load_ip(pipe, control_models["ip-adapter-sd15"])
    pipe.set_ip_adapter_scale(0.8)
    without_lora = _run(pipe, ip_adapter_image=_noise(5))
    pipe.load_lora_weights(str(tiny_lora_path.parent), weight_name=tiny_lora_path.name, adapter_name="tiny")
    with_lora = _run(pipe, ip_adapter_image=_noise(5))
    assert _diff(with_lora, without_lora) > VISIBLE
    assert _diff(with_lora, _run(pipe, ip_adapter_image=_noise(6))) > VISIBLE


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_auto_pipelines_pick_controlnet_variants(family, control_models, tiny_sd_path, tiny_sdxl_path):
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    base = _pipe(family, tiny_sd_path, tiny_sdxl_path)
    net = _net(control_models[f"controlnet-{family}"])
    prefix = "StableDiffusion" if family == "sd15" else "StableDiffusionXL"
    expected = {
        AutoPipelineForText2Image: f"{prefix}ControlNetPipeline",
        AutoPipelineForImage2Image: f"{prefix}ControlNetImg2ImgPipeline",
        AutoPipelineForInpainting: f"{prefix}ControlNetInpaintPipeline",
    }
    for auto, name in expected.items():
        assert type(auto.from_pipe(base, controlnet=net)).__name__ == name


def test_builds_are_deterministic(tmp_path, control_models, tiny_sd_path):
    net = ensure_tiny_controlnet(tmp_path / "net", tiny_sd_path, "sd15")
    ip = ensure_tiny_ip_adapter(tmp_path / "ip", tiny_sd_path, "sd15")
    for fresh, cached in ((net, control_models["controlnet-sd15"]), (ip, control_models["ip-adapter-sd15"])):
        files = sorted(p.relative_to(fresh) for p in fresh.rglob("*.safetensors"))
        assert files
        assert all((fresh / f).read_bytes() == (cached / f).read_bytes() for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ip", "net"]  # no temp dirs left behind


def test_bad_arguments_raise_clear_errors(tmp_path, tiny_sd_path, tiny_sdxl_path):
    with pytest.raises(ValueError, match="unknown tiny model family 'flux'"):
        ensure_tiny_controlnet(tmp_path / "a", tiny_sd_path, "flux")
    with pytest.raises(ValueError, match="holds a sdxl pipeline, not sd15"):
        ensure_tiny_ip_adapter(tmp_path / "b", tiny_sdxl_path, "sd15")
    with pytest.raises(ValueError, match="no unet/config.json"):
        ensure_tiny_controlnet(tmp_path / "c", tmp_path, "sd15")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
