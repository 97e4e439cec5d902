"""Prometheus /metrics and /healthz: queue depth, jobs by state, latency, device bytes, loads/evictions."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from engine.jobs.runner import JobRunner
from engine.metrics import Metrics, MetricsServer
from engine.runtime.arbiter import MIB, Arbiter
from engine.store.jobs import JobStore
from tests.queue_support import http_get
from tests.test_arbiter import TinyModel


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in metrics:\n{text}")


async def test_bot_metrics_follow_the_queue_the_arbiter_and_finished_jobs(open_store) -> None:
    store = await open_store()
    jobs = JobStore(store.db)
    arbiter = Arbiter(budget_bytes=10 * MIB, device="cpu", probe=lambda: 0)
    for name in ("a", "b"):
        arbiter.register(TinyModel(name, 6))
    metrics = Metrics("bot", "test-bot")
    metrics.watch_jobs(jobs)
    metrics.watch_arbiter(arbiter)

    async def ok(job, ctx):
        async with arbiter.use(job.payload["model"]):
            return {}

    runner = JobRunner(jobs, arbiter, {"use": ok}, poll_s=0.02)
    runner.subscribe(metrics)
    server = MetricsServer(metrics, "127.0.0.1", 0)
    port = await server.start()
    try:
        for user in (1, 2, 3):
            await jobs.enqueue(user, 0, 0, "use", {"model": "a"})
        text = (await http_get(f"http://127.0.0.1:{port}/metrics"))[1]
        assert _value(text, "atelier_queue_depth") == 3 and _value(text, 'atelier_jobs{state="queued"}') == 3
        assert _value(text, "atelier_device_used_bytes") == 0
        assert _value(text, "atelier_device_budget_bytes") == 10 * MIB

        await runner.start()
        await runner.run_until_idle(10)
        await jobs.enqueue(4, 0, 0, "use", {"model": "b"})  # b does not fit beside a: a is evicted
        await runner.run_until_idle(10)
        await runner.stop()
        await asyncio.sleep(0.05)
        status, text = await http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert _value(text, "atelier_queue_depth") == 0 and _value(text, 'atelier_jobs{state="done"}') == 4
        assert _value(text, 'atelier_job_latency_seconds_count{kind="use",state="done"}') == 4
        assert _value(text, "atelier_model_loads_total") == 2
        assert _value(text, "atelier_model_evictions_total") == 1
        assert _value(text, "atelier_device_used_bytes") == 6 * MIB  # b stays loaded until idle
        status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok", "role": "bot", "id": "test-bot"}
    finally:
        await server.stop()
        await arbiter.close()


async def test_health_reports_a_failing_check_and_a_broken_gauge_does_not_break_scrapes() -> None:
    metrics = Metrics("worker", "w1")

    async def broken(m):
        raise RuntimeError("store is gone")

    metrics.add_refresh(broken)
    metrics.batch(3, 4)

    async def health():
        raise ConnectionError("redis unreachable")

    server = MetricsServer(metrics, "127.0.0.1", 0, health)
    port = await server.start()
    try:
        status, text = await http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and _value(text, "atelier_batch_images_sum") == 4
        status, body = await http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 503 and "redis unreachable" in json.loads(body)["error"]
    finally:
        await server.stop()


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
            await MetricsServer(Metrics("bot"), "127.0.0.1", taken).start()
