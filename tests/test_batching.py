"""Cross-user batching: the generic Batcher (grouping, window, caps, errors) and pixel-equality on the tiny SD."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from PIL import Image

from engine.core import local_others
from engine.runtime.arbiter import Arbiter
from engine.runtime.batching import Batcher, DiffusionBatcher, RenderItem
from engine.runtime.diffusion import Cancelled, InvalidRequest
from engine.runtime.diffusion.multi import compat_key, generate_group, images_of


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ----- the generic Batcher -----


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.groups: list[tuple[object, list]] = []
        self.fail_on = fail_on

    async def __call__(self, key, items):
        self.groups.append((key, list(items)))
        await asyncio.sleep(0.01)
        if self.fail_on in items:
            raise RuntimeError("the whole call broke")
        return [ValueError(f"bad {i}") if str(i).startswith("bad") else f"out:{i}" for i in items]


async def test_compatible_items_share_a_group_up_to_max_batch() -> None:
    rec = Recorder()
    b = Batcher(rec, max_batch=3, window_s=0.2)
    outs = await asyncio.gather(*(b.submit("k", 1, f"a{i}") for i in range(4)), b.submit("other", 1, "b"))
    assert outs == ["out:a0", "out:a1", "out:a2", "out:a3", "out:b"]
    sizes = sorted((k, len(items)) for k, items in rec.groups)
    assert sizes == [("k", 1), ("k", 3), ("other", 1)]
    assert rec.groups[0] == ("k", ["a0", "a1", "a2"])  # oldest first, capped at max_batch images
    await b.close()


async def test_item_sizes_count_images_and_a_big_item_runs_alone() -> None:
    rec = Recorder()
    b = Batcher(rec, max_batch=4, window_s=0.1)
    await asyncio.gather(
        b.submit("k", 3, "x"), b.submit("k", 2, "y"), b.submit("k", 1, "z"), b.submit("k", 6, "w")
    )
    assert [items for _, items in rec.groups] == [["x", "z"], ["y"], ["w"]]
    await b.close()


async def test_window_waits_for_company_only_while_others_are_coming() -> None:
    rec = Recorder()
    coming = [1]
    b = Batcher(rec, max_batch=4, window_s=0.3, others=lambda: coming[0])

    async def late():
        await asyncio.sleep(0.1)
        coming[0] = 0
        return await b.submit("k", 1, "late")

    outs = await asyncio.gather(b.submit("k", 1, "early"), late())
    assert outs == ["out:early", "out:late"] and rec.groups == [("k", ["early", "late"])]

    rec.groups.clear()
    t0 = time.monotonic()
    assert await b.submit("k", 1, "alone") == "out:alone"  # nobody else is coming: no wait
    assert time.monotonic() - t0 < 0.2
    await b.close()


async def test_none_key_never_batches_and_errors_stay_with_their_item() -> None:
    rec = Recorder()
    b = Batcher(rec, max_batch=4, window_s=0.05)
    res = await asyncio.gather(
        b.submit(None, 1, "s1"), b.submit(None, 1, "s2"), b.submit("k", 1, "bad1"), b.submit("k", 1, "ok"),
        return_exceptions=True,
    )  # fmt: skip
    assert res[:2] == ["out:s1", "out:s2"] and res[3] == "out:ok"
    assert isinstance(res[2], ValueError) and "bad bad1" in str(res[2])
    assert sorted(len(items) for _, items in rec.groups) == [1, 1, 2]


async def test_a_failing_call_fails_every_member_and_the_lane_goes_on() -> None:
    b = Batcher(Recorder(fail_on="boom"), max_batch=4, window_s=0.05)
    res = await asyncio.gather(b.submit("k", 1, "boom"), b.submit("k", 1, "mate"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "whole call broke" in str(r) for r in res)
    assert await b.submit("k", 1, "next") == "out:next"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Recorder(), max_batch=0, window_s=0.1)
    with pytest.raises(ValueError, match="window"):
        Batcher(Recorder(), max_batch=2, window_s=-1)


# ----- the tiny pipeline -----

USERS = [  # (prompt, negative, seed): three users with their own prompt, negative and seed
    ("a red fox in snow", "blurry", 11),
    ("a lighthouse at dusk", "dark", 2024),
    ("green apples on a table", "text, watermark", 7),
]


def _req(model, prompt, negative, seed, **kw):
    fields = {"steps": 2, "width": 64, "height": 64, "safety": "off", "scheduler": "euler_a"} | kw
    return model.request(prompt=prompt, negative=negative, seed=seed, **fields)


def test_group_gives_each_request_the_pixels_of_its_own_seed_alone(tiny_sd_model) -> None:
    reqs = [_req(tiny_sd_model, *u) for u in USERS] + [_req(tiny_sd_model, "two cats", "blurry", 5, batch=2)]
    outcomes = generate_group(tiny_sd_model, reqs)
    for req, out in zip(reqs, outcomes, strict=True):
        alone = tiny_sd_model.generate(req)
        got = images_of(out)
        assert [im.info["atelier_seed"] for im in got] == req.seeds()
        for a, b in zip(got, alone, strict=True):
            assert np.abs(px(a) - px(b)).max() <= 2  # the DiffusionModel batch test's own tolerance
    # a different seed really is a different image, so the comparison above can fail
    other = tiny_sd_model.generate(_req(tiny_sd_model, USERS[0][0], USERS[0][1], 12))
    assert np.abs(px(images_of(outcomes[0])[0]) - px(other[0])).max() > 10


def test_group_refuses_incompatible_requests_and_isolates_a_cancel(tiny_sd_model) -> None:
    a = _req(tiny_sd_model, "a", "blurry", 1)
    with pytest.raises(InvalidRequest, match="batch"):
        generate_group(tiny_sd_model, [a, _req(tiny_sd_model, "b", "blurry", 2, steps=3)])
    with pytest.raises(InvalidRequest, match="batch"):
        generate_group(
            tiny_sd_model, [a, _req(tiny_sd_model, "b", "", 2)]
        )  # negative vs none differs on SDXL
    src = Image.new("RGB", (64, 64), "red")
    assert compat_key(_req(tiny_sd_model, "b", "x", 2, init_image=src)) is None
    b = _req(tiny_sd_model, "b", "blurry", 2)
    steps: list[int] = []
    out = generate_group(tiny_sd_model, [a, b], [lambda n, t, p: steps.append(n), None], [None, lambda: True])
    assert len(images_of(out[0])) == 1 and steps == [1, 2]
    assert isinstance(out[1], Cancelled)
    with pytest.raises(Cancelled, match="every request"):
        generate_group(tiny_sd_model, [a, b], None, [lambda: True, lambda: True])


async def test_diffusion_batcher_groups_concurrent_users_through_the_arbiter(tiny_sd_model) -> None:
    arbiter = Arbiter(budget_bytes=2**40, device="cpu", probe=lambda: 0)
    arbiter.register(tiny_sd_model)
    groups: list[tuple[int, int]] = []
    batcher = DiffusionBatcher(
        arbiter, max_batch=4, window_s=0.5, on_group=lambda n, i: groups.append((n, i))
    )
    reqs = [_req(tiny_sd_model, *u) for u in USERS]
    items = [RenderItem(tiny_sd_model, r) for r in reqs]
    src = Image.new("RGB", (64, 64), "blue")
    i2i = RenderItem(tiny_sd_model, _req(tiny_sd_model, "sea", "", 3, init_image=src, steps=4, strength=0.5))
    outs = await asyncio.gather(*(batcher.generate(i) for i in [*items, i2i]))
    assert sorted(groups) == [(1, 1), (3, 3)]  # the img2img request never joins a txt2img group
    for req, got in zip(reqs, outs[:3], strict=True):
        alone = tiny_sd_model.generate(req)[0]
        assert np.abs(px(got[0]) - px(alone)).max() <= 2
    await batcher.close()  # the arbiter is not closed: it would unload the shared session model


async def test_local_job_runner_batches_queued_jobs_of_different_users(tiny_sd_model, open_store) -> None:
    from engine.jobs.runner import JobRunner
    from engine.store.jobs import JobStore

    store = await open_store()
    jobs = JobStore(store.db)
    arbiter = Arbiter(budget_bytes=2**40, device="cpu", probe=lambda: 0)
    arbiter.register(tiny_sd_model)
    groups: list[tuple[int, int]] = []
    runner: JobRunner | None = None
    batcher = DiffusionBatcher(
        arbiter, 4, 1.0, others=lambda: local_others(runner, batcher),
        on_group=lambda n, i: groups.append((n, i)),
    )  # fmt: skip
    images: dict[int, Image.Image] = {}

    async def generate(job, ctx):
        req = _req(tiny_sd_model, job.payload["prompt"], job.payload["negative"], job.payload["seed"])
        images[job.id] = (
            await batcher.generate(RenderItem(tiny_sd_model, req, ctx.progress, ctx.should_cancel))
        )[0]
        return {}

    runner = JobRunner(jobs, arbiter, {"generate": generate}, concurrency=4, poll_s=0.02)
    ids = [
        await jobs.enqueue(user, 0, 0, "generate", {"prompt": p, "negative": n, "seed": s})
        for user, (p, n, s) in enumerate(USERS)
    ]
    await runner.start()
    await runner.run_until_idle(60)
    await runner.stop()
    await batcher.close()
    assert groups == [(3, 3)]  # three users, one pipeline call
    for job_id, (p, n, s) in zip(ids, USERS, strict=True):
        alone = tiny_sd_model.generate(_req(tiny_sd_model, p, n, s))[0]
        assert np.abs(px(images[job_id]) - px(alone)).max() <= 2


async def test_the_batching_hint_reads_the_queue_only_when_the_runner_may_have_queued_jobs(open_store) -> None:
    from types import SimpleNamespace

    from engine.jobs.runner import JobRunner
    from engine.store.jobs import JobStore

    store = await open_store()
    jobs = JobStore(store.db)
    reads: list[int] = []
    counted = jobs.queued

    async def queued() -> int:
        reads.append(1)
        return await counted()

    jobs.queued = queued  # type: ignore[method-assign]
    batcher = SimpleNamespace(batcher=SimpleNamespace(inflight=1))  # this job is at the batcher
    seen: list[tuple[int, int]] = []

    async def generate(job, ctx):
        seen.append((await local_others(runner, batcher), len(reads)))  # alone: 0, and no read
        if not job.payload.get("second"):
            await jobs.enqueue(2, 0, 0, "generate", {"second": True})
            runner.wake()
            seen.append((await local_others(runner, batcher), len(reads)))  # a submission came: read, 1
        return {}

    arbiter = Arbiter(budget_bytes=2**30, device="cpu", probe=lambda: 0)
    runner = JobRunner(jobs, arbiter, {"generate": generate}, concurrency=4, poll_s=120.0)
    await jobs.enqueue(1, 0, 0, "generate", {})
    await runner.start()
    try:
        async with asyncio.timeout(30):  # no run_until_idle: its wake() calls would make a read due
            while (await jobs.counts())["done"] < 2:
                await asyncio.sleep(0.01)
    finally:
        await runner.stop()
    assert seen[:2] == [(0, 0), (1, 1)]
