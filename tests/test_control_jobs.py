"""Guided 'generate' jobs end to end: Engine -> handler -> preprocessor / ControlNet / IP-Adapter -> PNG + history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.config import Control, Generation, Gpu, Paths, Settings
from engine.core import Engine
from engine.runtime.diffusion import InvalidRequest
from engine.runtime.managed import ModelNotAvailable
from engine.store.history import Scope

A, GUILD = 11, 500


@pytest.fixture
def settings(tmp_path: Path, tiny_models_dir: Path) -> Settings:
    return Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, safety="off"),
        control=Control(detect_resolution=64, outpaint_overlap_px=8),
    )


@pytest.fixture
async def svc(settings, tiny_sd_path, tiny_safety_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    services = await Engine.start(settings, demo=True, poll_s=0.05)
    yield services
    await services.stop()


def upload(settings: Settings, name: str, image: Image.Image) -> str:
    folder = settings.path("data_dir") / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    image.save(path)
    return str(path)


def box_image(size: tuple[int, int] = (64, 64)) -> Image.Image:
    im = Image.new("RGB", size, (30, 30, 30))
    ImageDraw.Draw(im).rectangle((12, 10, 44, 50), fill=(230, 230, 230))
    return im


async def run(svc: Engine, **payload):
    payload = {"prompt": "a knight", "preset": "demo", "seed": 5} | payload
    job_id = await svc.submit("generate", payload, user_id=A, guild_id=GUILD)
    return await svc.wait(job_id, timeout_s=180)


def px(path_or_image) -> np.ndarray:
    im = Image.open(path_or_image) if isinstance(path_or_image, str) else path_or_image
    return np.asarray(im.convert("RGB"), dtype=np.int16)


async def test_canny_control_job_saves_the_map_and_steers_the_image(svc, settings) -> None:
    src = upload(settings, "pose.png", box_image())
    plain = await run(svc)
    guided = await run(svc, controls=[{"type": "edges", "image": src, "scale": 1.5}])
    assert guided.state == "done", guided.error
    info = guided.result["params"]["controls"][0]
    assert info["type"] == "canny" and info["scale"] == 1.5 and info["source"] == src
    cmap = px(info["map"])
    assert set(np.unique(cmap)) <= {0, 255} and cmap.max() == 255
    assert cmap[30, 30].max() == 0  # inside the box: no edge
    assert np.abs(px(guided.result["images"][0]) - px(plain.result["images"][0])).mean() > 0.5
    row = await svc.store.history.get(guided.result["generation_id"], Scope(A, GUILD))
    assert row.params["controls"][0]["map"] == info["map"]


async def test_map_as_given_and_control_from_an_earlier_generation(svc, settings) -> None:
    src = upload(settings, "skeleton.png", box_image())
    as_is = await run(svc, controls=[{"type": "openpose", "image": src, "preprocess": False}])
    assert as_is.state == "done", as_is.error
    assert np.array_equal(px(as_is.result["params"]["controls"][0]["map"]), px(src))
    gen_id = as_is.result["generation_id"]
    again = await run(svc, controls=[{"type": "canny", "source_generation_id": gen_id}])
    assert again.state == "done", again.error
    assert again.result["params"]["controls"][0]["source"] == gen_id


async def test_two_controls_at_once(svc, settings) -> None:
    src = upload(settings, "two.png", box_image())
    job = await run(
        svc,
        controls=[
            {"type": "canny", "image": src, "scale": 1.0},
            {"type": "scribble", "image": src, "scale": 0.5, "preprocess": False, "end": 0.6},
        ],
    )
    assert job.state == "done", job.error
    got = [(c["type"], c["scale"], c["end"]) for c in job.result["params"]["controls"]]
    assert got == [("canny", 1.0, 1.0), ("scribble", 0.5, 0.6)]


async def test_preprocessor_without_weights_fails_the_job_clearly(svc, settings) -> None:
    src = upload(settings, "photo.png", box_image())
    job = await run(svc, controls=[{"type": "depth", "image": src}])
    assert job.state == "failed"
    assert "depth" in job.error and "dpt_hybrid" in job.error


async def test_bad_control_payloads_fail_with_the_field(svc, settings) -> None:
    # the contract is checked once, at submission: a malformed control is refused and no job is queued
    with pytest.raises(InvalidRequest, match="exactly one of image or source_generation_id"):
        await run(svc, controls=[{"type": "canny"}])
    with pytest.raises(InvalidRequest, match="unknown control type 'x-ray'"):
        await run(svc, controls=[{"type": "x-ray", "image": "a.png"}])
    assert await svc.jobs.user_jobs(A, ("queued", "running", "done", "failed", "cancelled")) == []
    # where the file lives is known only when the job reads it: that fails the job with the reason
    outside = Path(settings.path("data_dir")).parent / "elsewhere.png"
    box_image().save(outside)
    job = await run(svc, controls=[{"type": "canny", "image": str(outside)}])
    assert job.state == "failed" and "must be files under" in job.error


async def test_reference_image_job(svc, settings) -> None:
    ref = upload(settings, "ref.png", Image.new("RGB", (48, 48), (240, 120, 20)))
    plain = await run(svc)
    job = await run(svc, reference_image=ref, reference_mode="style", reference_scale=1.0)
    assert job.state == "done", job.error
    info = job.result["params"]["reference"]
    assert info["mode"] == "style" and info["scale"] == 1.0 and info["source"] == ref
    assert not np.array_equal(px(job.result["images"][0]), px(plain.result["images"][0]))
    default = await run(svc, reference_image=ref)
    assert default.result["params"]["reference"]["scale"] == settings.control.reference_scale


@pytest.mark.parametrize(("direction", "size", "kept"), [
    ("right", (128, 64), (slice(0, 64), slice(0, 56))),
    ("up", (64, 128), (slice(72, 128), slice(0, 64))),
    ("all", (128, 128), (slice(40, 88), slice(40, 88))),
])  # fmt: skip
async def test_outpaint_grows_the_canvas_and_keeps_the_original(svc, direction, size, kept) -> None:
    first = await run(svc)
    src = px(first.result["images"][0])
    job = await run(
        svc,
        prompt="wider",
        source_generation_id=first.result["generation_id"],
        outpaint={"direction": direction, "factor": 2.0},
    )
    assert job.state == "done", job.error
    out = Image.open(job.result["images"][0])
    assert out.size == size
    info = job.result["params"]["outpaint"]
    left, top = info["box"][:2]
    rows, cols = kept
    region = px(out)[rows, cols]
    original = src[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    assert np.array_equal(region, original)
    assert job.result["parent_id"] == first.result["generation_id"]


async def test_outpaint_needs_a_source(svc) -> None:
    with pytest.raises(InvalidRequest, match="outpaint needs a source image"):
        await run(svc, outpaint={"direction": "left"})
    assert await svc.jobs.user_jobs(A, ("queued", "running", "done", "failed", "cancelled")) == []


async def test_control_preview_service(svc, settings) -> None:
    cmap = await svc.control_preview("canny", box_image((80, 48)))
    assert cmap.size == (80, 48) and px(cmap).max() == 255
    with pytest.raises(InvalidRequest, match="unknown control type"):
        await svc.control_preview("thermal", box_image())
    with pytest.raises(ModelNotAvailable, match="openpose"):
        await svc.control_preview("pose", box_image())


def test_unconfigured_controlnet_names_the_config_key(settings) -> None:
    from engine.runtime.control.models import ControlRegistry

    class R:
        pass

    r = R()
    r.settings = settings
    control = ControlRegistry(r)
    sdxl = {"model": "org/some-sdxl", "family": "sdxl"}
    assert control.control_ref(sdxl, "canny") == "diffusers/controlnet-canny-sdxl-1.0"
    with pytest.raises(InvalidRequest, match=r"control\.controlnets\.sdxl\.lineart"):
        control.control_ref(sdxl, "lineart")
    assert (
        control.adapter({"model": "demo:tiny-sd", "family": "sd15"})["model"] == "demo:tiny-ip-adapter-sd15"
    )
    with pytest.raises(InvalidRequest, match="IP-Adapter"):
        control.adapter({"model": "x/flux", "family": "flux"})
