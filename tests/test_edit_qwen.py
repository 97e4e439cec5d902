"""Qwen-Image-Edit(-Plus) as edit families: the tiny random pipelines (Qwen2.5-VL encoder) on CPU, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Gpu, Settings
from engine.runtime.diffusion.edit import EditModel
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.testmodels_qwen import ensure_tiny_qwen_edit, ensure_tiny_qwen_edit_plus

BASE = {"steps": 2, "cfg": 4.0, "scheduler": "default", "width": 64, "height": 64}


def _model(name: str, family: str, path: Path) -> EditModel:
    model = EditModel(
        {**BASE, "name": name, "family": family, "model": str(path)}, Settings(gpu=Gpu(device="cpu")),
        safety_checker=None,
    )  # fmt: skip
    model.load("cpu")
    return model


@pytest.fixture(scope="session")
def qwen_plus(tiny_models_dir: Path) -> EditModel:
    return _model(
        "tiny-qwen-plus",
        "qwen-edit-plus",
        ensure_tiny_qwen_edit_plus(tiny_models_dir / "tiny-qwen-edit-plus"),
    )


@pytest.fixture
def small_vae_area(monkeypatch):
    """The Plus pipeline VAE-encodes every source at 1 MP; on CPU the tiny tests encode them at 64x64."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 64 * 64)


def mug() -> Image.Image:
    im = Image.new("RGB", (64, 64), (200, 40, 40))
    im.paste((240, 240, 240), (16, 16, 48, 48))
    return im


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def test_tiny_qwen_edit_plus_edits_from_one_and_from_two_images(qwen_plus, small_vae_area):
    one = qwen_plus.request(prompt="put this logo on the mug", init_image=mug(), seed=5, safety="off")
    (a,) = qwen_plus.generate(one)
    assert a.size == (64, 64) and a.info["atelier_seed"] == 5
    two = one.model_copy(update={"edit_images": [Image.new("RGB", (48, 80), (20, 20, 220))]})
    (b,) = qwen_plus.generate(two)
    assert b.size == (64, 64) and not np.array_equal(pixels(a), pixels(b))
    with pytest.raises(InvalidRequest, match="qwen-edit-plus takes at most 3 images; you gave 4"):
        qwen_plus.generate(one.model_copy(update={"edit_images": [mug()] * 3}))
    with pytest.raises(InvalidRequest, match="qwen-edit-plus edits take no mask"):
        qwen_plus.generate(one.model_copy(update={"mask_image": Image.new("L", (64, 64), 255)}))


def test_tiny_qwen_edit_runs_one_image_and_refuses_two(tiny_models_dir):
    model = _model("tiny-qwen", "qwen-edit", ensure_tiny_qwen_edit(tiny_models_dir / "tiny-qwen-edit"))
    req = model.request(prompt="make it night", init_image=mug(), seed=5, safety="off", steps=2, cfg=1.0)
    (out,) = model.generate(req)
    assert out.size == (64, 64) and out.info["atelier_seed"] == 5
    with pytest.raises(InvalidRequest, match="qwen-edit edits take one image; you gave 2"):
        model.generate(req.model_copy(update={"edit_images": [mug()]}))
