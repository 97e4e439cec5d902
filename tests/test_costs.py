"""GPU-time estimates before queueing (measured rate per preset and device), per-user caps, and VRAM-aware limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.discord.render import ProgressState, progress_text
from bot.usecases import account
from bot.usecases.quality import eta_text, vram_text
from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Cost, Scoring
from engine.jobs.admission import ACT_BYTES_PER_PIXEL, MIB, vram_limits
from engine.runtime.diffusion.errors import InvalidRequest
from engine.store.cache import Costs

A = 11
TINY = {"family": "sd15", "steps": 4, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}
WORK = 4 * 64 * 64 / 1e6  # steps × megapixels of one default tiny image


def _settings(tmp_path: Path, tiny_models_dir: Path, **cost) -> Settings:
    return Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60, preview_every_steps=2),
        queue=Queue(batch_window_ms=0, daily_quota=50),
        scoring=Scoring(enabled=False),
        cost=Cost(**cost),
    )


@pytest.fixture
def start(tmp_path, tiny_models_dir, tiny_engines):
    async def make(*, worker: bool = True, budget_bytes: int | None = None, vram_mb: int | None = None, **cost):
        preset = TINY if vram_mb is None else {**TINY, "vram_mb": vram_mb}
        settings = _settings(tmp_path, tiny_models_dir, **cost)
        return await tiny_engines(settings, preset, worker=worker, budget_bytes=budget_bytes)

    return make


async def test_the_estimate_uses_the_default_rate_then_the_measured_one(start):
    svc = await start(default_rate=2.0)
    first = await svc.submit("generate", {"prompt": "a boat", "preset": "tiny", "count": 2}, user_id=A)
    assert await svc.store.costs.estimate_of(first) == pytest.approx(2.0 * WORK * 2, abs=0.01)
    assert (await svc.wait(first, 120)).state == "done"
    rate, samples = await svc.store.costs.rate("tiny", "cpu")
    assert samples == 1 and rate != 2.0 and rate > 0
    second = await svc.submit("generate", {"prompt": "a boat", "preset": "tiny", "steps": 8}, user_id=A)
    assert await svc.store.costs.estimate_of(second) == pytest.approx(rate * 8 * 64 * 64 / 1e6, abs=0.01)
    await svc.wait(second, 120)
    _, samples = await svc.store.costs.rate("tiny", "cpu")
    assert samples == 2  # updated after each job


async def test_the_progress_message_shows_the_estimate_and_the_queue_eta(start):
    svc = await start(worker=False, default_rate=1000.0)
    ahead = await svc.submit("generate", {"prompt": "one", "preset": "tiny"}, user_id=A)
    mine = await svc.submit("generate", {"prompt": "two", "preset": "tiny"}, user_id=22)
    own = 1000.0 * WORK
    assert await eta_text(svc, ahead) == f"≈ {own:.1f} GPU-s"  # nothing ahead of it
    note = await eta_text(svc, mine)
    assert note == f"≈ {own:.1f} GPU-s · starts in ≈ {own / svc.runner.concurrency:.0f} s"
    text = progress_text(ProgressState(mine, position=2, note=note))
    assert "position 2 in the queue" in text and "GPU-s" in text and "starts in" in text


async def test_a_request_over_the_per_request_cap_is_refused_with_the_reason(start):
    svc = await start(default_rate=100.0, max_job_gpu_s=5.0)
    with pytest.raises(InvalidRequest, match=r"about 8 GPU-seconds .*limit of 5 per request") as e:
        await svc.submit("generate", {"prompt": "x", "preset": "tiny", "count": 1, "steps": 20}, user_id=A)
    assert "fewer steps" in str(e.value)
    assert (await svc.jobs.counts())["queued"] == 0  # nothing was queued
    await svc.submit("generate", {"prompt": "x", "preset": "tiny", "steps": 1}, user_id=A)  # 0.4 s fits


async def test_the_queued_cap_counts_the_users_waiting_jobs(start):
    svc = await start(worker=False, default_rate=100.0, max_queued_gpu_s=4.0)
    await svc.submit("generate", {"prompt": "x", "preset": "tiny", "steps": 4}, user_id=A)  # 1.6 s
    await svc.submit("generate", {"prompt": "x", "preset": "tiny", "steps": 4}, user_id=A)  # 3.3 s
    with pytest.raises(InvalidRequest, match=r"your queued jobs already need about 3 GPU-seconds"):
        await svc.submit("generate", {"prompt": "x", "preset": "tiny", "steps": 4}, user_id=A)
    await svc.submit("generate", {"prompt": "x", "preset": "tiny", "steps": 4}, user_id=22)  # another user


async def test_vram_limits_refuse_a_batch_or_size_that_cannot_fit(start):
    # 80 MiB budget, 40 MiB preset peak → 28 MiB weights: 52 MiB for drawing
    svc = await start(worker=False, budget_bytes=80 * MIB, vram_mb=40)
    per_image = ACT_BYTES_PER_PIXEL["sd15"] * svc.settings.cost.vram_headroom * 64 * 64
    fits = int((80 - 28) * MIB // per_image)
    assert fits == 2
    await svc.submit("generate", {"prompt": "x", "preset": "tiny", "count": fits}, user_id=A)
    with pytest.raises(InvalidRequest, match=rf"3 image\(s\) at 64×64 do not fit .*at most {fits} image"):
        await svc.submit("generate", {"prompt": "x", "preset": "tiny", "count": 3}, user_id=A)
    with pytest.raises(InvalidRequest, match=r"at 256×256 do not fit .*not even one image"):
        await svc.submit("generate", {"prompt": "x", "preset": "tiny", "width": 256, "height": 256}, user_id=A)
    shown = await vram_text(svc, A, 0, ["tiny"])
    assert f"tiny: up to {fits} image(s) at its default size" in shown and "28 MiB weights" in shown


async def test_vram_limits_use_the_arbiters_measured_footprint(start):
    svc = await start(budget_bytes=256 * MIB, vram_mb=200)  # the preset claims 140 MiB of weights
    preset = await svc.store.presets.resolve("image", "tiny")
    before = vram_limits(svc.arbiter, svc.settings, preset, 64 * 64)
    assert before.weights_bytes == int(200 * MIB * 0.7)
    job = await svc.wait(await svc.submit("generate", {"prompt": "x", "preset": "tiny"}, user_id=A), 120)
    assert job.state == "done", job.error
    after = vram_limits(svc.arbiter, svc.settings, preset, 64 * 64)
    measured = next(s["planned_bytes"] for s in svc.arbiter.snapshot() if s["name"] == "tiny")
    assert after.weights_bytes == measured < before.weights_bytes  # the tiny model is far below its claim
    assert after.max_side > before.max_side


async def test_the_queued_cap_holds_for_submissions_racing_each_other(start):
    svc = await start(worker=False, default_rate=100.0, max_queued_gpu_s=4.0)
    job = {"prompt": "x", "preset": "tiny", "steps": 4}  # 1.6 s each: two fit under the cap
    results = await asyncio.gather(*(svc.submit("generate", job, user_id=A) for _ in range(4)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, InvalidRequest)]
    assert len(refused) == 2 and all("your queued jobs already need about 3 GPU-seconds" in str(r) for r in refused)
    assert (await svc.jobs.counts())["queued"] == 2  # the refused ones left nothing behind
    assert await svc.store.costs.pending(user_id=A) == pytest.approx(2 * 100.0 * WORK, abs=0.02)


async def test_a_submission_reads_its_named_preset_once(start):
    svc = await start(worker=False)
    names: list[str] = []
    resolve = svc.store.presets.resolve

    async def counted(kind, name, *who):
        names.append(name)
        return await resolve(kind, name, *who)

    svc.store.presets.resolve = counted
    job = await svc.submit("generate", {"prompt": "a boat", "preset": "tiny", "steps": 4}, user_id=A)
    assert names == ["tiny"]  # validation's read serves the admission's estimate too
    assert await svc.store.costs.estimate_of(job) is not None
    names.clear()
    payload = await account.imagine_payload(svc, user_id=A, guild_id=0, prompt="a boat", preset="tiny", count=1)
    await svc.submit("generate", payload, user_id=A)
    assert names == ["tiny"]  # the front leaves the name's check to the submission
    with pytest.raises(InvalidRequest, match="nope"):
        await svc.submit("generate", {"prompt": "a boat", "preset": "nope"}, user_id=A)


async def test_a_failed_rate_update_never_costs_the_images(start, monkeypatch):
    svc = await start()

    def broken(*args: object, **kw: object):
        return lambda conn: conn.execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setattr(Costs, "fold", staticmethod(broken))  # the step of the history row's transaction
    job = await svc.wait(await svc.submit("generate", {"prompt": "a boat", "preset": "tiny"}, user_id=A), 120)
    assert job.state == "done" and Path(job.result["images"][0]).exists()
    assert await svc.store.history.of_job(job.id) is not None  # the row stayed: only the rate was lost
    assert await svc.store.costs.rate("tiny", "cpu") is None
