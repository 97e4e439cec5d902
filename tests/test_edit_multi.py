"""Multi-image edits end to end: two attached images (or a reply plus one) reach the edit pipeline in order."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.core import Engine
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.pipeline import DiffusionModel
from engine.store.history import Scope
from tools.context import Attachment, Services, ToolContext
from tools.orchestrator import Orchestrator

A, GUILD = 11, 500
RED, BLUE, GREEN = (200, 40, 40), (20, 20, 220), (30, 200, 30)


@pytest.fixture
async def klein_engine(tmp_path: Path, tiny_models_dir: Path):
    settings = Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60, edit_preset="demo-klein"),
        queue=Queue(max_per_user=4, daily_quota=100, lease_s=30.0),
    )
    svc = await Engine.start(settings, demo=True, poll_s=0.05)
    yield svc
    await svc.stop()


@pytest.fixture
def seen(monkeypatch) -> list[list[tuple[int, int, int]]]:
    """The centre colour of every source image each pipeline call received, in order."""
    calls: list[list[tuple[int, int, int]]] = []
    original = DiffusionModel._call_pipeline

    def spy(self, pipe, kwargs):
        images = kwargs.get("image")
        images = images if isinstance(images, list) else [images] if images is not None else []
        calls.append([im.convert("RGB").getpixel((im.width // 2, im.height // 2)) for im in images])
        return original(self, pipe, kwargs)

    monkeypatch.setattr(DiffusionModel, "_call_pipeline", spy)
    return calls


def png(color, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def ctx(svc: Engine, *colors, **kw) -> ToolContext:
    services = Services(
        svc.store, svc.jobs, svc.settings, submitter=svc.submitter, wait_for_job_hook=svc.wait
    )
    files = tuple(Attachment(f"img{i}.png", png(c), "image/png") for i, c in enumerate(colors))
    return ToolContext(services=services, user_id=A, guild_id=GUILD, attachments=files, **kw)


async def edit(svc: Engine, context: ToolContext, prompt: str):
    return await Orchestrator(context.services).execute(
        context, {"tool": "generate", "args": {"prompt": prompt, "edit": True}}
    )


def near(got: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return bool(np.abs(np.subtract(got, want)).max() <= 2)


async def test_two_attached_images_run_one_edit_with_both_in_order(klein_engine, seen):
    call = await edit(klein_engine, ctx(klein_engine, RED, BLUE), "put this logo on the mug")
    assert call.ok, call.error
    assert call.result["mode"] == "edit" and call.result["edit"]["with"] == ["attached image img1.png"]
    job = await klein_engine.wait(call.result["job_ids"][0], timeout_s=180)
    assert job.state == "done", job.error
    assert len(job.payload["edit_images"]) == 1 and job.payload["source_image"]
    (images,) = seen
    assert len(images) == 2 and near(images[0], RED) and near(images[1], BLUE)
    r = job.result
    assert (r["preset"], r["params"]["source_images"], r["params"]["edit"]) == (
        "demo-klein",
        2,
        "put this logo on the mug",
    )
    page = await klein_engine.store.history.search("logo mug", Scope(A, GUILD))
    assert [g.id for g in page.items] == [r["generation_id"]]


async def test_a_reply_plus_an_attached_image_edits_the_result_with_it_and_keeps_lineage(klein_engine, seen):
    parent = await klein_engine.wait(
        await klein_engine.submit(
            "generate", {"prompt": "a white mug", "seed": 5}, user_id=A, guild_id=GUILD
        ),
        timeout_s=180,
    )
    assert parent.state == "done", parent.error
    pid = parent.result["generation_id"]
    seen.clear()
    call = await edit(
        klein_engine, ctx(klein_engine, GREEN, replied_generation_id=pid), "put this logo on the mug"
    )
    assert call.ok, call.error
    assert call.result["based_on"] == pid and call.result["edit"]["from"] == f"the replied image #{pid}"
    job = await klein_engine.wait(call.result["job_ids"][0], timeout_s=180)
    assert job.state == "done", job.error
    (images,) = seen
    assert len(images) == 2 and near(images[1], GREEN) and not near(images[0], GREEN)
    row = await klein_engine.store.history.get(job.result["generation_id"], Scope(A, GUILD))
    assert row.parent_id == pid and row.params["source_images"] == 2


async def test_too_many_images_and_non_images_are_refused_before_anything_runs(klein_engine):
    call = await edit(klein_engine, ctx(klein_engine, RED, BLUE, GREEN, RED, BLUE), "merge these")
    assert not call.ok and "klein takes at most 4 images; you gave 5" in call.error
    context = ctx(klein_engine, RED)
    bad = replace(
        context, attachments=(*context.attachments, Attachment("logo.png", b"not a picture", "image/png"))
    )
    call = await edit(klein_engine, bad, "put this logo on the mug")
    assert not call.ok and "logo.png is not a usable image" in call.error
    data = klein_engine.settings.path("data_dir")
    data.mkdir(parents=True, exist_ok=True)
    for name in "abcd":
        Image.new("RGB", (64, 64), RED).save(data / f"{name}.png")
    paths = [str(data / f"{n}.png") for n in "abcd"]
    four = {"prompt": "x", "edit": True, "source_image": paths[0], "edit_images": paths[1:]}
    with pytest.raises(InvalidRequest, match="qwen-edit-plus takes at most 3 images; you gave 4"):
        await klein_engine.submit("generate", {**four, "preset": "qwen-edit-2509"}, user_id=A, guild_id=GUILD)
    with pytest.raises(InvalidRequest, match="kontext edits take one image; you gave 2"):
        await klein_engine.submit(
            "generate", {**four, "preset": "demo-edit", "edit_images": paths[1:2]}, user_id=A, guild_id=GUILD
        )
    with pytest.raises(InvalidRequest, match="edit_images are the other source images of an edit"):
        await klein_engine.submit("generate", {**four, "edit": False}, user_id=A, guild_id=GUILD)
    assert (await klein_engine.jobs.counts())["queued"] == 0


async def test_an_unreadable_second_image_fails_the_edit_naming_that_image(klein_engine, seen):
    data = klein_engine.settings.path("data_dir")
    data.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), RED).save(data / "mug.png")
    (data / "logo.png").write_bytes(b"not a picture")  # passed the door, then broke on disk
    payload = {"prompt": "put the logo on the mug", "edit": True, "source_image": str(data / "mug.png"),
               "edit_images": [str(data / "logo.png")], "seed": 3}  # fmt: skip
    job = await klein_engine.wait(await klein_engine.submit("generate", payload, user_id=A, guild_id=GUILD), 120)
    assert job.state == "failed" and job.error.startswith("source image 2:"), job.error
    assert seen == []  # nothing was drawn from a half-read set
