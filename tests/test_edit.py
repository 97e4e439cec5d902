"""Instruction edits: the tiny FLUX.1 Kontext pipeline on CPU, the edit job end to end, and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Settings
from engine.core import Engine
from engine.runtime.diffusion import read_png_meta
from engine.runtime.diffusion.denoise import to_pil
from engine.runtime.diffusion.edit import EditModel
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.testmodels_edit import ensure_tiny_kontext
from engine.store.history import Scope
from tests.demo_support import demo_engine, demo_settings, loaded_edit_model, run_generate

A, GUILD = 11, 500


@pytest.fixture(scope="session")
def tiny_kontext_path(tiny_models_dir: Path) -> Path:
    return ensure_tiny_kontext(tiny_models_dir / "tiny-kontext")


@pytest.fixture(scope="session")
def kontext(tiny_kontext_path: Path) -> EditModel:
    return loaded_edit_model(tiny_kontext_path, "kontext", cfg=2.5)


def source(color=(200, 40, 40), size=(64, 64)) -> Image.Image:
    im = Image.new("RGB", size, color)
    im.paste((20, 20, 220), (0, 0, size[0] // 2, size[1] // 2))
    return im


def pixels(im: str | Image.Image) -> np.ndarray:
    return np.asarray((Image.open(im) if isinstance(im, str) else im).convert("RGB"))


def test_tiny_kontext_same_seed_same_pixels_and_matches_the_raw_pipeline(kontext, tiny_kontext_path):
    import torch
    from diffusers import FluxKontextPipeline

    req = kontext.request(prompt="make it night", init_image=source(), seed=7, safety="off")
    a, b = kontext.generate(req), kontext.generate(req)
    assert a[0].size == (64, 64) and a[0].info["atelier_seed"] == 7
    assert np.array_equal(pixels(a[0]), pixels(b[0]))
    other = kontext.generate(
        kontext.request(prompt="make it night", init_image=source(), seed=8, safety="off")
    )
    assert not np.array_equal(pixels(a[0]), pixels(other[0]))
    raw = FluxKontextPipeline.from_pretrained(tiny_kontext_path)
    raw.set_progress_bar_config(disable=True)
    out = raw(
        image=source(), prompt="make it night", num_inference_steps=3, guidance_scale=2.5, width=64, height=64,
        max_area=64 * 64, _auto_resize=False, max_sequence_length=64, output_type="np",
        generator=[torch.Generator("cpu").manual_seed(7)],
    )  # fmt: skip
    assert np.array_equal(pixels(a[0]), pixels(to_pil(out.images[0])))  # the same call as plain diffusers


def test_masked_edit_keeps_the_unmasked_pixels_and_bad_masks_are_refused(kontext):
    src = source()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half only
    req = kontext.request(
        prompt="add a moon", init_image=src, mask_image=mask, strength=1.0, seed=3, safety="off"
    )
    (out,) = kontext.generate(req)
    assert np.array_equal(pixels(out)[:, 40:], pixels(src)[:, 40:])  # beyond the feathered edge: untouched
    assert not np.array_equal(pixels(out)[:, :24], pixels(src)[:, :24])
    small = Image.new("L", (32, 32), 255)
    with pytest.raises(InvalidRequest, match="the mask is 32x32 but the image is 64x64"):
        kontext.generate(kontext.request(prompt="x", init_image=src, mask_image=small, seed=1, safety="off"))
    with pytest.raises(InvalidRequest, match="needs a source image"):
        kontext.generate(kontext.request(prompt="x", seed=1, safety="off"))


@pytest.fixture
def settings(tmp_path: Path, tiny_models_dir: Path) -> Settings:
    return demo_settings(tmp_path, tiny_models_dir, max_steps=60)


@pytest.fixture
async def demo(settings, tiny_kontext_path):
    async with demo_engine(settings) as svc:
        yield svc


async def run(svc: Engine, payload: dict):
    return await run_generate(svc, payload, A, GUILD, timeout_s=180)


async def test_edit_job_keeps_lineage_is_searchable_and_writes_png_meta(demo):
    assert demo.settings.generation.edit_preset == "demo-edit"  # demo mode names the tiny Kontext
    parent = await run(demo, {"prompt": "a lighthouse on a cliff", "seed": 5})
    assert parent.state == "done", parent.error
    pid = parent.result["generation_id"]
    job = await run(demo, {"prompt": "make it night", "edit": True, "source_generation_id": pid})
    assert job.state == "done", job.error
    r = job.result
    assert (r["preset"], r["model"], r["parent_id"], r["prompt"]) == (
        "demo-edit",
        "demo:tiny-kontext",
        pid,
        "make it night",
    )
    assert r["params"]["edit"] == "make it night" and r["params"]["mode"] == "img2img"
    assert r["seeds"] == [job.payload["seed"]]
    meta = read_png_meta(r["images"][0])["atelier"]
    assert meta["params"]["edit"] == "make it night" and meta["parent_id"] == pid
    assert Image.open(r["images"][0]).size == (64, 64)
    page = await demo.store.history.search("night", Scope(A, GUILD))
    assert [g.id for g in page.items] == [r["generation_id"]]
    row = await demo.store.history.get(r["generation_id"], Scope(A, GUILD))
    assert row.parent_id == pid


async def test_bad_edit_requests_fail_with_a_reason(demo):
    with pytest.raises(InvalidRequest, match="an edit needs a source image"):
        await demo.submit("generate", {"prompt": "make it night", "edit": True}, user_id=A, guild_id=GUILD)
    with pytest.raises(InvalidRequest, match="an edit cannot be a draft"):
        await demo.submit(
            "generate",
            {"prompt": "x", "edit": True, "draft": True, "source_image": "a.png"},
            user_id=A,
            guild_id=GUILD,
        )
    data = demo.settings.path("data_dir")
    data.mkdir(parents=True, exist_ok=True)
    (data / "notes.png").write_text("not an image at all")
    job = await run(demo, {"prompt": "make it night", "edit": True, "source_image": str(data / "notes.png")})
    assert job.state == "failed" and "the source image" in job.error
    source().save(data / "src.png")
    Image.new("L", (32, 32), 255).save(data / "mask.png")
    job = await run(
        demo,
        {
            "prompt": "add a moon",
            "edit": True,
            "source_image": str(data / "src.png"),
            "mask": str(data / "mask.png"),
        },
    )
    assert job.state == "failed" and "the mask is 32x32 but the image is 64x64" in job.error
    with pytest.raises(InvalidRequest, match=r"preset 'demo' \(sd15\) cannot follow instructions"):
        await run(
            demo,
            {
                "prompt": "make it night",
                "edit": True,
                "preset": "demo",
                "source_image": str(data / "src.png"),
            },
        )


async def test_an_edit_without_an_edit_preset_is_refused_at_submission(
    settings, tiny_sd_path, tiny_safety_path
):
    svc = await Engine.start(settings, poll_s=0.05)  # not demo: generation.edit_preset is empty
    try:
        data = svc.settings.path("data_dir")
        data.mkdir(parents=True, exist_ok=True)
        source().save(data / "src.png")
        with pytest.raises(InvalidRequest, match=r"no edit model is configured \(generation.edit_preset\)"):
            await run(svc, {"prompt": "make it night", "edit": True, "source_image": str(data / "src.png")})
    finally:
        await svc.stop()
