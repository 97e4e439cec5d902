"""Guided requests (ControlNet + reference) rendered on an `atelier worker` subprocess over a real Valkey."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.queue_support import make_settings, write_config
from tests.test_queue_redis import url, valkey, workers  # noqa: F401 - fixtures


@pytest.fixture
def settings(tmp_path, url, tiny_models_dir):  # noqa: F811
    from engine.config import Control, Generation, Gpu

    base = make_settings(tmp_path, url)
    return base.model_copy(
        update={
            "paths": base.paths.model_copy(update={"demo_models": str(tiny_models_dir)}),
            "gpu": Gpu(device="cpu"),
            "generation": Generation(safety="off", max_side=512, max_pixels=256 * 256),
            "control": Control(detect_resolution=64),
        }
    )


async def test_guided_job_renders_on_a_worker(settings, tmp_path, workers, tiny_sd_path) -> None:  # noqa: F811
    from engine.core import Engine

    uploads = settings.path("data_dir") / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    src = Image.new("RGB", (64, 64))
    ImageDraw.Draw(src).rectangle((10, 10, 50, 40), outline="white", width=3)
    src.save(uploads / "c.png")
    Image.new("RGB", (32, 32), (250, 90, 10)).save(uploads / "r.png")
    w = workers(write_config(settings, tmp_path / "config.json"), "--demo")
    svc = await Engine.start(settings, demo=True, poll_s=0.05)
    try:
        await w.ready(120)
        base = {"prompt": "a tower", "preset": "demo", "seed": 3}
        guided = {
            **base,
            "controls": [{"type": "canny", "image": str(uploads / "c.png")}],
            "reference_image": str(uploads / "r.png"),
        }
        ids = [await svc.submit("generate", p, user_id=1) for p in (base, guided)]
        plain, done = [await svc.wait(i, 180) for i in ids]
        assert (plain.state, done.state) == ("done", "done"), (plain.error, done.error)
        assert done.result["params"]["controls"][0]["type"] == "canny"
        assert done.result["params"]["reference"]["mode"] == "subject"
        a = np.asarray(Image.open(plain.result["images"][0]), dtype=np.int16)
        b = np.asarray(Image.open(done.result["images"][0]), dtype=np.int16)
        assert np.abs(a - b).mean() > 0.5
        assert svc.arbiter.snapshot() == [] or all(s["kind"] != "controlnet" for s in svc.arbiter.snapshot())
    finally:
        await svc.stop()
