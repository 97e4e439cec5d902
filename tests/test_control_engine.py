"""ControlNet and IP-Adapter through DiffusionModel (tiny random models, CPU): guidance reaches the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.remote.protocol import decode_request, encode_request
from engine.runtime.control.controlnet import ControlNetWeights
from engine.runtime.diffusion import InvalidRequest
from engine.runtime.diffusion.guidance import ControlSpec, ReferenceSpec
from engine.runtime.diffusion.multi import compat_key
from engine.runtime.diffusion.pipeline import DiffusionModel

ADAPTER = {"subfolder": "", "weight": "ip-adapter.safetensors", "image_encoder": "image_encoder"}


@pytest.fixture(scope="session")
def control_paths(tiny_models_dir: Path, tiny_sd_path: Path, tiny_sdxl_path: Path) -> dict[str, Path]:
    from engine.runtime.diffusion.testmodels_control import ensure_control_demo_models

    return ensure_control_demo_models(tiny_models_dir, tiny_sd_path, tiny_sdxl_path)


def _net(path: Path, family: str) -> ControlNetWeights:
    net = ControlNetWeights(str(path), family, name=f"net-{family}", dtype="float32")
    net.load("cpu")
    return net


@pytest.fixture(scope="session")
def net_sd(control_paths):
    net = _net(control_paths["controlnet-sd15"], "sd15")
    yield net
    net.close()


def shapes(kind: str, size: int = 64) -> Image.Image:
    """A black image with a white rectangle (kind "box") or circle ("disc")."""
    im = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(im)
    if kind == "box":
        draw.rectangle((8, 8, 40, 56), outline="white", width=3)
    else:
        draw.ellipse((20, 4, 60, 44), outline="white", width=3)
    return im


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def gen(model: DiffusionModel, nets: list | None = None, **fields) -> np.ndarray:
    fields = {"prompt": "a red fox in snow", "seed": 7, "safety": "off"} | fields
    out = model.generate(model.request(**fields), controlnets=[n.module for n in nets or []])
    return px(out[0])


def control(net: ControlNetWeights, image: Image.Image, **kw) -> ControlSpec:
    return ControlSpec(type=kw.pop("type", "canny"), image=image, model=net.ref, **kw)


def test_controlnet_weights_are_managed(net_sd, control_paths) -> None:
    from engine.runtime.managed import Managed

    assert isinstance(net_sd, Managed) and net_sd.kind == "controlnet" and net_sd.loaded
    assert net_sd.estimate_bytes() > 0
    fresh = ControlNetWeights(str(control_paths["controlnet-sd15"]), "sd15", dtype="float32")
    assert not fresh.loaded
    fresh.load("cpu")
    assert fresh.loaded
    fresh.unload()
    assert not fresh.loaded and fresh.module is None


def test_missing_controlnet_is_a_clear_error(tmp_path) -> None:
    from engine.runtime.managed import ModelNotAvailable

    net = ControlNetWeights(str(tmp_path / "nope" / "net"), "sd15")
    with pytest.raises(ModelNotAvailable, match="ControlNet .*not found"):
        net.load("cpu")


def test_control_image_reaches_the_pipeline_and_changes_the_output(tiny_sd_model, net_sd) -> None:
    plain = gen(tiny_sd_model)
    box = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, shapes("box"))])
    again = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, shapes("box"))])
    disc = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, shapes("disc"))])
    assert np.array_equal(box, again)
    assert np.abs(box - plain).mean() > 1.0
    assert np.abs(box - disc).mean() > 1.0
    # at conditioning scale 0 the ControlNet adds nothing: the plain image again
    zero = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, shapes("box"), scale=0.0)])
    assert np.abs(zero - plain).max() <= 1


def test_multi_controlnet_per_net_scales_apply(tiny_sd_model, net_sd) -> None:
    box, disc = shapes("box"), shapes("disc")
    only_box = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, box)])
    only_disc = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, disc, type="depth")])
    a = [control(net_sd, box, scale=1.0), control(net_sd, disc, type="depth", scale=0.0)]
    b = [control(net_sd, box, scale=0.0), control(net_sd, disc, type="depth", scale=1.0)]
    both = [control(net_sd, box, scale=1.0), control(net_sd, disc, type="depth", scale=1.0)]
    out_a, out_b = (
        gen(tiny_sd_model, [net_sd, net_sd], controls=a),
        gen(tiny_sd_model, [net_sd, net_sd], controls=b),
    )
    out_both = gen(tiny_sd_model, [net_sd, net_sd], controls=both)
    assert np.abs(out_a - only_box).max() <= 1  # a net at scale 0 contributes nothing
    assert np.abs(out_b - only_disc).max() <= 1
    assert np.abs(out_both - out_a).mean() > 1.0 and np.abs(out_both - out_b).mean() > 1.0


def test_guidance_start_end_apply(tiny_sd_model, net_sd) -> None:
    full = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, shapes("box"))])
    early = gen(tiny_sd_model, [net_sd], controls=[control(net_sd, shapes("box"), end=0.5)])
    assert np.abs(full - early).mean() > 0.5
    with pytest.raises(ValueError, match="start 0.6 must be below end 0.5"):
        control(net_sd, shapes("box"), start=0.6, end=0.5)


def test_control_with_img2img_and_inpaint(tiny_sd_model, net_sd) -> None:
    source = Image.new("RGB", (64, 64), (200, 60, 40))
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    c = [control(net_sd, shapes("box"))]
    img2img = gen(tiny_sd_model, [net_sd], controls=c, init_image=source, strength=0.8)
    plain = gen(tiny_sd_model, init_image=source, strength=0.8)
    assert img2img.shape == (64, 64, 3) and np.abs(img2img - plain).mean() > 0.5
    inpaint = gen(tiny_sd_model, [net_sd], controls=c, init_image=source, mask_image=mask)
    assert np.array_equal(inpaint[:, 40:], px(source)[:, 40:])  # unmasked pixels stay the source's


def test_controls_and_nets_must_match(tiny_sd_model, net_sd) -> None:
    from engine.runtime.diffusion import GenerationFailed

    req = tiny_sd_model.request(prompt="x", seed=1, safety="off", controls=[control(net_sd, shapes("box"))])
    with pytest.raises(GenerationFailed, match="1 control"):
        tiny_sd_model.generate(req)
    with pytest.raises(InvalidRequest, match="at most 3"):
        tiny_sd_model.request(prompt="x", controls=[control(net_sd, shapes("box"))] * 4)


def test_sdxl_controlnet(tiny_sdxl_model, control_paths) -> None:
    net = _net(control_paths["controlnet-sdxl"], "sdxl")
    try:
        plain = gen(tiny_sdxl_model)
        box = gen(tiny_sdxl_model, [net], controls=[control(net, shapes("box"))])
        disc = gen(tiny_sdxl_model, [net], controls=[control(net, shapes("disc"))])
    finally:
        net.close()
    assert np.abs(box - plain).mean() > 1.0 and np.abs(box - disc).mean() > 1.0


def reference(path: Path, image: Image.Image, **kw) -> ReferenceSpec:
    return ReferenceSpec(image=image, adapter={"model": str(path), **ADAPTER}, **kw)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_reference_image_steers_and_unloads_exactly(
    family, tiny_sd_model, tiny_sdxl_model, control_paths
) -> None:
    model = tiny_sd_model if family == "sd15" else tiny_sdxl_model
    path = control_paths[f"ip-adapter-{family}"]
    plain = gen(model)
    warm = Image.new("RGB", (64, 64), (240, 120, 20))
    cold = shapes("disc")
    a = gen(model, reference=reference(path, warm, scale=1.0))
    b = gen(model, reference=reference(path, cold, scale=1.0))
    style = gen(model, reference=reference(path, warm, scale=1.0, mode="style"))
    assert model.reference.loaded is not None
    assert np.abs(a - plain).mean() > 1.0 and np.abs(a - b).mean() > 1.0
    assert np.abs(style - a).mean() > 0.5  # style-only weighting is not the same as subject
    assert np.array_equal(gen(model), plain)  # a request without a reference: the adapter is gone
    assert model.reference.loaded is None


def test_reference_with_lora_and_control(tiny_sd_model, net_sd, control_paths, tiny_lora_path) -> None:
    ref = reference(control_paths["ip-adapter-sd15"], Image.new("RGB", (64, 64), (20, 200, 90)))
    c = [control(net_sd, shapes("box"))]
    guided = gen(tiny_sd_model, [net_sd], controls=c, reference=ref)
    with_lora = gen(tiny_sd_model, [net_sd], controls=c, reference=ref, loras=[(str(tiny_lora_path), 1.0)])
    assert np.abs(with_lora - guided).mean() > 0.5
    assert np.array_equal(gen(tiny_sd_model, [net_sd], controls=c, reference=ref), guided)
    gen(tiny_sd_model)  # leave the shared model plain


def test_guided_requests_travel_and_are_never_batched(net_sd, control_paths) -> None:
    from engine.runtime.diffusion.request import GenerationRequest

    ref = reference(control_paths["ip-adapter-sd15"], shapes("disc"), mode="style", scale=0.4)
    req = GenerationRequest(
        prompt="x",
        width=64,
        height=64,
        controls=[control(net_sd, shapes("box"), scale=0.7, end=0.8)],
        reference=ref,
    )
    assert req.guided and compat_key(req) is None
    back = decode_request(encode_request(req))
    assert back.params() == req.params()
    assert np.array_equal(px(back.controls[0].image), px(req.controls[0].image))
    assert np.array_equal(px(back.reference.image), px(ref.image))
    assert req.params()["controls"][0] == {
        "type": "canny", "model": net_sd.ref, "scale": 0.7, "start": 0.0, "end": 0.8
    }  # fmt: skip


def test_reference_is_refused_for_flux() -> None:
    from engine.runtime.diffusion.request import GenerationRequest

    with pytest.raises(ValueError, match="not flux"):
        GenerationRequest(prompt="x", family="flux", reference=reference(Path("x"), shapes("box")))
