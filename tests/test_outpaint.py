"""Outpaint planning: canvas sizes, mask/overlap bands, budget fitting, exact restore, and a real tiny inpaint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.outpaint import OutpaintPlan, plan_outpaint, restore

BIG = {"max_pixels": 4096 * 4096, "max_side": 4096}


def _image(w: int, h: int, seed: int = 1) -> Image.Image:
    """A random RGB image (every pixel distinct enough to catch any shift)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _mask(plan: OutpaintPlan) -> np.ndarray:
    return np.asarray(plan.mask)


@pytest.mark.parametrize(
    ("direction", "size", "factor", "canvas", "box"),
    [
        ("right", (64, 48), 2.0, (128, 48), (0, 0, 64, 48)),
        ("left", (64, 48), 2.0, (128, 48), (64, 0, 128, 48)),
        ("down", (64, 48), 2.0, (64, 96), (0, 0, 64, 48)),
        ("up", (64, 48), 2.0, (64, 96), (0, 48, 64, 96)),
        ("all", (64, 48), 2.0, (128, 96), (32, 24, 96, 72)),
        ("all", (64, 48), 1.5, (96, 72), (16, 12, 80, 60)),
        ("right", (64, 64), 1.1, (72, 64), (0, 0, 64, 64)),
        # sides that are not multiples of 8 are padded with new area, never cropped
        ("right", (60, 50), 2.0, (120, 56), (0, 3, 60, 53)),
    ],
)
def test_canvas_size_and_placement(direction, size, factor, canvas, box):
    plan = plan_outpaint(_image(*size), direction, factor, **BIG)
    assert plan.canvas.size == canvas
    assert plan.canvas.mode == "RGB"
    assert plan.mask.size == canvas and plan.mask.mode == "L"
    assert plan.box == box
    assert plan.scale == 1.0
    assert plan.original.size == size
    assert canvas[0] % 8 == 0 and canvas[1] % 8 == 0


def test_canvas_keeps_original_pixels_and_prefills_new_area():
    img = _image(64, 48)
    plan = plan_outpaint(img, "all", 2.0, **BIG)
    x0, y0, x1, y1 = plan.box
    canvas = np.asarray(plan.canvas)
    assert np.array_equal(canvas[y0:y1, x0:x1], np.asarray(img))
    new = canvas[_mask(plan) == 255]
    assert new.std() > 5  # not a flat grey/black slab
    # the fill continues the edges: a red-left/blue-right image gets a reddish left and bluish right margin
    split = np.zeros((48, 64, 3), dtype=np.uint8)
    split[:, :32, 0] = 220
    split[:, 32:, 2] = 220
    p2 = np.asarray(plan_outpaint(Image.fromarray(split), "all", 2.0, **BIG).canvas).astype(int)
    assert p2[:, :16, 0].mean() > p2[:, :16, 2].mean() + 100
    assert p2[:, -16:, 2].mean() > p2[:, -16:, 0].mean() + 100
    # deterministic
    assert np.array_equal(np.asarray(plan_outpaint(img, "all", 2.0, **BIG).canvas), canvas)


@pytest.mark.parametrize("direction", ["all", "left", "right", "up", "down"])
def test_mask_covers_new_area_and_only_bordering_bands(direction):
    plan = plan_outpaint(_image(64, 48), direction, 2.0, **BIG, overlap=8)
    mask = _mask(plan)
    assert set(np.unique(mask)) == {0, 255}
    x0, y0, x1, y1 = plan.box
    outside = np.ones(mask.shape, dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert (mask[outside] == 255).all()
    inner = mask[y0:y1, x0:x1]
    # which sides of the original border new area
    borders = {
        "left": x0 > 0,
        "top": y0 > 0,
        "right": x1 < plan.canvas.width,
        "bottom": y1 < plan.canvas.height,
    }
    strips = {
        "left": inner[8:-8, :8],
        "right": inner[8:-8, -8:],
        "top": inner[:8, 8:-8],
        "bottom": inner[-8:, 8:-8],
    }
    for side, strip in strips.items():
        assert (strip == 255).all() == borders[side], side
        if not borders[side]:
            assert (strip == 0).all(), side
    # just past the band the original is kept
    assert (inner[8:-8, 8:-8] == 0).all()
    expected = {"all": 4, "left": 1, "right": 1, "up": 1, "down": 1}[direction]
    assert sum(borders.values()) == expected


def test_overlap_zero_masks_exactly_the_new_area():
    plan = plan_outpaint(_image(64, 48), "right", 2.0, **BIG, overlap=0)
    mask = _mask(plan)
    assert (mask[:, :64] == 0).all() and (mask[:, 64:] == 255).all()
    assert plan.bands == (0, 0, 0, 0)


def test_restore_preserves_original_exactly_where_mask_is_zero():
    img = _image(64, 48, seed=3)
    for direction in ("all", "left", "up"):
        plan = plan_outpaint(img, direction, 2.0, **BIG)
        generated = _image(*plan.canvas.size, seed=9)
        out = restore(generated, plan)
        assert out.size == plan.canvas.size
        keep = _mask(plan) == 0
        x0, y0, x1, y1 = plan.box
        placed = np.zeros((*keep.shape, 3), dtype=np.uint8)
        placed[y0:y1, x0:x1] = np.asarray(img)
        assert np.array_equal(np.asarray(out)[keep], placed[keep])
        outside = np.ones(keep.shape, dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(np.asarray(out)[outside], np.asarray(generated)[outside])


def test_restore_feathers_the_overlap_band():
    img = Image.new("RGB", (64, 48), (200, 200, 200))
    plan = plan_outpaint(img, "right", 2.0, **BIG, overlap=8)
    generated = Image.new("RGB", plan.canvas.size, (0, 0, 0))
    row = np.asarray(restore(generated, plan))[24, :, 0].astype(int)
    band = row[56:64]
    assert (np.diff(band) < 0).all()  # ramps from the original down to the generated pixels
    assert band.min() > 0 and band.max() < 200
    hard = np.asarray(restore(generated, plan, feather=False))[24, :, 0]
    assert (hard[:56] == 200).all() and (hard[56:] == 0).all()


def test_restore_rejects_wrong_size():
    plan = plan_outpaint(_image(64, 48), "right", 2.0, **BIG)
    with pytest.raises(InvalidRequest, match=r"64x48 but the plan's canvas is 128x48"):
        restore(_image(64, 48), plan)


def test_fit_to_budget_shrinks_uniformly():
    img = _image(64, 48)
    plan = plan_outpaint(img, "all", 2.0, max_pixels=64 * 48, max_side=4096)
    assert plan.scale < 1
    w, h = plan.canvas.size
    assert w * h <= 64 * 48 and w % 8 == 0 and h % 8 == 0
    ow, oh = plan.original.size
    assert abs(ow / 64 - oh / 48) < 0.05  # uniform
    assert w >= ow * 1.5 and h >= oh * 1.5
    side = plan_outpaint(img, "right", 4.0, max_pixels=10**9, max_side=128)
    assert side.scale < 1 and max(side.canvas.size) <= 128
    assert side.canvas.width % 8 == 0 and side.canvas.height % 8 == 0
    out = restore(_image(*side.canvas.size, seed=5), side)
    keep = _mask(side) == 0
    x0, y0, x1, y1 = side.box
    placed = np.zeros((*keep.shape, 3), dtype=np.uint8)
    placed[y0:y1, x0:x1] = np.asarray(side.original)
    assert np.array_equal(np.asarray(out)[keep], placed[keep])


@pytest.mark.parametrize("factor", [1.0, 1.09, 4.01, 10, -2, float("nan"), True, "2"])
def test_bad_factor(factor):
    with pytest.raises(InvalidRequest, match="outpaint factor must be"):
        plan_outpaint(_image(64, 48), "all", factor, **BIG)


@pytest.mark.parametrize("direction", ["sideways", "", "upwards"])
def test_bad_direction(direction):
    with pytest.raises(InvalidRequest, match=r"unknown outpaint direction .*all, left, right, up, down"):
        plan_outpaint(_image(64, 48), direction, 2.0, **BIG)


def test_bad_overlap_and_budget():
    with pytest.raises(InvalidRequest, match="overlap"):
        plan_outpaint(_image(64, 48), "all", 2.0, **BIG, overlap=-1)
    with pytest.raises(InvalidRequest, match="budget"):
        plan_outpaint(_image(64, 48), "all", 2.0, max_pixels=10, max_side=4096)


def test_direction_is_case_insensitive_and_mode_converted():
    rgba = _image(64, 48).convert("RGBA")
    plan = plan_outpaint(rgba, " Right ", 2.0, **BIG)
    assert plan.canvas.size == (128, 48) and plan.original.mode == "RGB"


def test_real_tiny_inpaint_keeps_original(tiny_sd_path):
    import torch
    from diffusers import AutoPipelineForInpainting, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(str(tiny_sd_path), safety_checker=None)
    pipe = AutoPipelineForInpainting.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    src = _image(64, 64, seed=11)
    plan = plan_outpaint(src, "right", 2.0, max_pixels=256 * 256, max_side=512)
    w, h = plan.canvas.size
    result = pipe(
        "a red house",
        image=plan.canvas,
        mask_image=plan.mask,
        width=w,
        height=h,
        num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]
    assert result.size == (w, h) == (128, 64)
    out = restore(result, plan)
    assert out.size == (128, 64)
    assert np.array_equal(np.asarray(out)[:, :56], np.asarray(src)[:, :56])  # kept (band = last 8 columns)
    assert not np.array_equal(np.asarray(out)[:, 64:], np.asarray(plan.canvas)[:, 64:])  # new area generated
