"""Multi-GPU workers: one device each, jobs routed to the worker that holds their preset, one process per device."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

import pytest
import redis.asyncio as aredis

from bot.worker_fleet import child_argv, devices_of
from engine.remote.placement import parse_device
from engine.remote.protocol import QUEUE, worker_queue
from engine.remote.registry import WorkerRegistry
from engine.remote.routing import depth, locate, preset_of, route
from tests.queue_support import REPO, Bot, make_settings, write_config
from tests.test_queue_redis import _until, url, valkey, workers  # noqa: F401 - shared fixtures


def test_device_names() -> None:
    assert parse_device("cpu:1") == ("cpu", "cpu") and parse_device("CUDA") == ("cuda", "cuda")
    assert parse_device("auto") == ("auto", "auto")
    for bad in ("gpu0", "mps:1", "cuda:x", ""):
        with pytest.raises(ValueError, match="--device wants"):
            parse_device(bad)
    with pytest.raises(ValueError, match=r"shows \d+ CUDA device"):
        parse_device("cuda:99")
    assert preset_of({"preset": {"name": "sdxl"}}) == "sdxl" and preset_of({"preset": "demo"}) == "demo"
    assert preset_of({"steps": 2}) is None


def test_fleet_arguments(tmp_path, monkeypatch) -> None:
    args = argparse.Namespace(
        config="c.json", devices="cpu:0,cpu:1", all_devices=False, id="gpu-box", metrics_port=None,
        max_jobs=2, warm=["demo"], demo=True, diagnostics=False,
    )  # fmt: skip
    settings = make_settings(tmp_path, "redis://x").model_copy(
        update={"metrics": make_settings(tmp_path, "redis://x").metrics.model_copy(update={"port": 9500})}
    )
    assert devices_of(args) == ["cpu:0", "cpu:1"]
    assert child_argv(settings, args, "cpu:1", 1) == [
        "--config", "c.json", "worker", "--device", "cpu:1", "--id", "gpu-box-cpu:1", "--metrics-port", "9501",
        "--max-jobs", "2", "--warm", "demo", "--demo",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="twice"):
        devices_of(argparse.Namespace(devices="cpu,cpu", all_devices=False))
    monkeypatch.setattr("bot.worker_fleet.visible_devices", lambda: [])
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        devices_of(argparse.Namespace(devices=None, all_devices=True))


async def test_jobs_go_to_the_worker_that_holds_their_preset(url, tmp_path, workers, tiny_models_dir) -> None:  # noqa: F811
    base = make_settings(tmp_path, url)
    settings = base.model_copy(
        update={"paths": base.paths.model_copy(update={"demo_models": str(tiny_models_dir)})}
    )
    config = write_config(settings, tmp_path / "config.json")
    warm = workers(config, "--device", "cpu:0", "--warm", "demo", "--max-jobs", "1")
    cold = workers(config, "--device", "cpu:1", "--max-jobs", "1")
    warm_id, cold_id = await warm.ready(120), await cold.ready(120)
    async with Bot(settings) as bot:
        listed = {w["id"]: w for w in await bot.remote.workers()}
        assert listed[warm_id]["device"] == "cpu:0" and listed[warm_id]["models"] == ["demo"]
        assert listed[cold_id]["device"] == "cpu:1" and listed[cold_id]["models"] == []
        for i in range(5):  # free and holding "demo": every one lands there (chance alone: 1 in 32)
            (row,) = await bot.wait_final([await bot.submit(1, preset="demo", steps=1, step_s=0.01, echo=i)])
            assert row.state == "done" and row.result["worker"] == warm_id, (i, row.result)
        long = await bot.submit(1, preset="demo", steps=40, step_s=0.05)
        await _until(lambda: _started(bot, long), what="the long job to start")
        other = await bot.submit(2, preset="demo", steps=1, step_s=0.01)  # the holder is busy: shared queue
        rows = await bot.wait_final([long, other])
        assert [r.result["worker"] for r in rows] == [warm_id, cold_id]
        assert await depth(bot.remote.pool) == 0


async def test_jobs_routed_to_a_gone_worker_go_back_to_the_shared_queue(url) -> None:  # noqa: F811
    r = aredis.from_url(url)
    registry = WorkerRegistry(r, 0.3)
    await registry.beat("w1", {"models": ["demo"], "max_jobs": 1, "queue": worker_queue("w1")})
    assert await route(r, await registry.workers(), "sdxl") == (QUEUE, None)  # it holds only demo
    queue, wid = await route(r, await registry.workers(), "demo")
    assert (queue, wid) == (worker_queue("w1"), "w1")
    await r.zadd(queue, {"atelier-job:1": 1})
    assert await route(r, await registry.workers(), "demo") == (QUEUE, None)  # its one slot is taken
    assert await locate(r, "atelier-job:1") == queue and await depth(r) == 1
    await asyncio.sleep(0.4)  # the heartbeat expires
    await registry.reap()
    assert await locate(r, "atelier-job:1") == QUEUE and await r.zcard(queue) == 0
    await r.aclose()


async def test_one_worker_process_per_listed_device(url, tmp_path) -> None:  # noqa: F811
    config = write_config(make_settings(tmp_path, url), tmp_path / "config.json")
    cmd = [sys.executable, "-m", "bot.cli", "--config", str(config), "worker", "--devices", "cpu:0,cpu:1"]
    proc = subprocess.Popen([*cmd, "--id", "box", "--metrics-port", "0"], cwd=REPO)
    r = aredis.from_url(url)
    registry = WorkerRegistry(r, 1.0)
    try:
        listed = await _until(lambda: _workers(registry, 2), timeout=90, what="two workers")
        assert {(w["id"], w["device"]) for w in listed} == {("box-cpu:0", "cpu:0"), ("box-cpu:1", "cpu:1")}
        proc.send_signal(signal.SIGTERM)  # reaches both through the supervisor
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert await registry.workers() == []
    finally:
        if proc.poll() is None:
            proc.kill()
        await r.aclose()


async def _started(bot: Bot, job_id: int) -> bool:
    return bool(bot.poster.progress[job_id])


async def _workers(registry: WorkerRegistry, n: int) -> list | None:
    listed = await registry.workers()
    return listed if len(listed) == n else None


def test_queue_lists_each_workers_device_and_presets() -> None:
    from bot.usecases.jobs import _worker_label

    assert (
        _worker_label({"id": "box", "device": "cuda:1", "models": ["sdxl", "demo"]})
        == "box on cuda:1 with sdxl, demo"
    )
    assert _worker_label({"id": "old"}) == "old"
