"""FLUX.2 Klein as an edit family: the tiny random Flux2KleinPipeline on CPU, one or several source images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Gpu, Settings
from engine.runtime.diffusion.denoise import to_pil
from engine.runtime.diffusion.edit import EditModel, check_image_count
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.testmodels_klein import ensure_tiny_klein

KLEIN = {"name": "tiny-klein", "family": "klein", "steps": 3, "cfg": 1.0, "scheduler": "default", "width": 64,
         "height": 64}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_klein_path(tiny_models_dir: Path) -> Path:
    return ensure_tiny_klein(tiny_models_dir / "tiny-klein")


@pytest.fixture(scope="session")
def klein(tiny_klein_path: Path) -> EditModel:
    model = EditModel(
        {**KLEIN, "model": str(tiny_klein_path)}, Settings(gpu=Gpu(device="cpu")), safety_checker=None
    )
    model.load("cpu")
    return model


def mug(size=(64, 64)) -> Image.Image:
    im = Image.new("RGB", size, (200, 40, 40))
    im.paste((240, 240, 240), (16, 16, size[0] - 16, size[1] - 16))
    return im


def logo(size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, (20, 20, 220))


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def test_tiny_klein_edit_has_the_requested_size_and_same_seed_same_pixels(klein, tiny_klein_path):
    import torch
    from diffusers import Flux2KleinPipeline

    req = klein.request(prompt="make it night", init_image=mug(), seed=7, safety="off", width=96, height=64)
    a, b = klein.generate(req), klein.generate(req)
    assert a[0].size == (96, 64) and a[0].info["atelier_seed"] == 7
    assert np.array_equal(pixels(a[0]), pixels(b[0]))
    other = klein.generate(req.model_copy(update={"seed": 8}))
    assert not np.array_equal(pixels(a[0]), pixels(other[0]))
    raw = Flux2KleinPipeline.from_pretrained(tiny_klein_path)
    raw.set_progress_bar_config(disable=True)
    out = raw(
        image=[mug().resize((96, 64), Image.Resampling.LANCZOS)], prompt="make it night", num_inference_steps=3,
        guidance_scale=1.0, width=96, height=64, max_sequence_length=64, output_type="np",
        generator=[torch.Generator("cpu").manual_seed(7)],
    )  # fmt: skip
    assert np.array_equal(pixels(a[0]), pixels(to_pil(out.images[0])))  # the same call as plain diffusers


def test_klein_edits_from_several_images_in_order(klein):
    one = klein.request(prompt="put this logo on the mug", init_image=mug(), seed=3, safety="off")
    two = one.model_copy(update={"edit_images": [logo()]})
    swapped = one.model_copy(update={"init_image": logo(), "edit_images": [mug()]})
    (a,), (b,), (c,) = klein.generate(one), klein.generate(two), klein.generate(swapped)
    assert b.size == (64, 64) and two.params()["source_images"] == 2
    assert not np.array_equal(pixels(a), pixels(b))  # the second image takes part
    assert not np.array_equal(pixels(b), pixels(c))  # and its place in the list matters
    # below Klein's 64 px: scaled up, not refused
    small = one.model_copy(update={"edit_images": [logo((24, 40))]})
    assert klein.generate(small)[0].size == (64, 64)


def test_klein_refuses_a_fifth_image_and_a_mask_with_several_images(klein):
    with pytest.raises(InvalidRequest, match="klein takes at most 4 images; you gave 5"):
        klein.generate(
            klein.request(prompt="x", init_image=mug(), edit_images=[logo()] * 4, seed=1, safety="off")
        )
    mask = Image.new("L", (64, 64), 255)
    with pytest.raises(InvalidRequest, match="a masked edit takes one source image"):
        klein.generate(
            klein.request(
                prompt="x", init_image=mug(), mask_image=mask, edit_images=[logo()], seed=1, safety="off"
            )
        )


def test_klein_masked_edit_keeps_the_unmasked_pixels(klein):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    req = klein.request(
        prompt="add a moon", init_image=mug(), mask_image=mask, strength=1.0, seed=3, safety="off"
    )
    (out,) = klein.generate(req)
    assert np.array_equal(pixels(out)[:, 40:], pixels(mug())[:, 40:])


def test_single_image_families_refuse_more_images_with_a_clear_message():
    with pytest.raises(
        InvalidRequest, match=r"kontext edits take one image; you gave 2.*qwen-edit-plus, klein"
    ):
        check_image_count("kontext", 2)
    with pytest.raises(InvalidRequest, match="qwen-edit-plus takes at most 3 images; you gave 4"):
        check_image_count("qwen-edit-plus", 4)
    check_image_count("qwen-edit-plus", 3)
    check_image_count("qwen-edit", 1)
