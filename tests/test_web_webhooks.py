"""Webhooks against a local aiohttp receiver: signature, retries with backoff, no retry on 4xx, the store record."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from bot.web.webhooks import sign, verify
from tests.web_support import A, B, serving, web_settings


@pytest.fixture
def settings(tmp_path: Path, tiny_models_dir: Path):
    return web_settings(tmp_path, tiny_models_dir, webhook_attempts=3)


@dataclass
class Receiver:
    """A local HTTP endpoint answering each POST with the next scripted status (then 200)."""

    script: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read(), time.monotonic()))
        status = self.script.pop(0) if self.script else 200
        return web.Response(status=status, text="ok" if status < 400 else "nope")


@contextlib.asynccontextmanager
async def receiver(*script: int) -> AsyncIterator[Receiver]:
    rec = Receiver(list(script))
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def submit_and_settle(site, headers: dict, callback: str, prompt: str = "a harbor") -> int:
    r = await site.client.post(
        "/v1/generations", json={"prompt": prompt, "callback_url": callback}, headers=headers
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = await site.engine.wait(job_id, 120)
    assert job.state == "done", job.error
    await site.app.state.webhooks.drain()
    return job_id


async def test_signed_result_is_delivered_once_and_verifies(settings):
    async with serving(settings) as site, receiver() as rec:
        h = await site.key(A)
        secret = (await site.engine.store.apikeys.list(A))[0].webhook_secret
        job_id = await submit_and_settle(site, h, rec.url)
        assert len(rec.got) == 1
        headers, body, _ = rec.got[0]
        sig = headers["X-Atelier-Signature"]
        ts, mac = (part.split("=", 1)[1] for part in sig.split(","))
        expected = hmac.new(secret.encode(), f"{ts}.{body.decode()}".encode(), hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mac, expected) and abs(time.time() - int(ts)) < 60
        assert (
            verify(secret, body, sig) and not verify(secret, body + b" ", sig) and not verify("x", body, sig)
        )
        assert not verify(secret, body, sign(secret, body, int(time.time()) - 3600))  # too old: a replay
        data = json.loads(body)
        assert data["event"] == "job.done" and data["job"]["id"] == job_id
        assert data["job"]["result"]["images"][0].endswith("/image/0") and headers["X-Atelier-Job"] == str(
            job_id
        )
        rows = await site.engine.store.apikeys.deliveries(job_id)
        assert [(d.attempt, d.status, d.ok) for d in rows] == [(1, 200, True)]
        job = await site.engine.jobs.require(job_id)
        assert job.posted  # claimed by the web front: no Discord poster will post it
        await site.engine.runner.announce_unposted()
        await site.app.state.webhooks.drain()
        assert len(rec.got) == 1 and await site.engine.store.apikeys.undelivered() == []


async def test_retries_on_500_with_backoff_then_succeeds(settings):
    async with serving(settings) as site, receiver(500, 503) as rec:
        waits: list[float] = []

        async def record(seconds: float) -> None:
            waits.append(seconds)

        site.app.state.webhooks.sleep = record
        job_id = await submit_and_settle(site, await site.key(A), rec.url)
        rows = await site.engine.store.apikeys.deliveries(job_id)
        assert [(d.attempt, d.status, d.ok) for d in rows] == [(1, 500, False), (2, 503, False), (3, 200, True)]
        assert rows[0].error == "nope"
        assert waits == [0.05, 0.1]  # exponential backoff from web.webhook_backoff_s
        assert len({body for _, body, _ in rec.got}) == 1  # the same body every time


async def test_no_retry_on_400_but_429_is_retried(settings):
    async with serving(settings) as site, receiver(400) as rec:
        h = await site.key(A)
        job_id = await submit_and_settle(site, h, rec.url)
        rows = await site.engine.store.apikeys.deliveries(job_id)
        assert [(d.attempt, d.status, d.ok) for d in rows] == [(1, 400, False)] and len(rec.got) == 1
        assert await site.engine.store.apikeys.undelivered() == []  # given up: settled, never retried
        rec.script = [429]
        job_id = await submit_and_settle(site, h, rec.url, "another harbor")
        rows = await site.engine.store.apikeys.deliveries(job_id)
        assert [(d.status, d.ok) for d in rows] == [(429, False), (200, True)]


async def test_unreachable_receiver_is_tried_the_configured_times(settings):
    async with serving(settings) as site:
        job_id = await submit_and_settle(site, await site.key(A), "http://127.0.0.1:9/hook")
        rows = await site.engine.store.apikeys.deliveries(job_id)
        assert [d.attempt for d in rows] == [1, 2, 3] and all(d.status is None and d.error for d in rows)


async def test_cancelled_job_webhook_and_resume_after_restart(settings):
    async with receiver() as rec:
        async with serving(settings, worker=False) as site:
            h = await site.key(B)
            r = await site.client.post(
                "/v1/generations", json={"prompt": "x", "callback_url": rec.url}, headers=h
            )
            job_id = r.json()["job_id"]
            await site.app.state.webhooks.close()  # the process "dies" before delivering anything
            await site.client.delete(f"/v1/jobs/{job_id}", headers=h)
            assert rec.got == [] and await site.engine.store.apikeys.undelivered() == [job_id]
        async with serving(settings, worker=False) as site:  # uvicorn's lifespan resumes it
            await site.app.state.webhooks.drain()
            assert len(rec.got) == 1
            data = json.loads(rec.got[0][1])
            assert data["event"] == "job.cancelled" and data["job"]["result"] is None
            assert await site.engine.store.apikeys.undelivered() == []


async def test_a_callback_for_a_job_that_already_ended_is_still_delivered(settings):
    async with serving(settings, worker=False) as site, receiver() as rec:
        job_id = await site.engine.submit("generate", {"prompt": "x"}, user_id=A, reply_to={"web_key": 1})
        await site.engine.runner.cancel(job_id, A)
        key = (await site.engine.store.apikeys.create(A)).key
        await site.app.state.webhooks.watch(job_id, key, rec.url)
        await site.app.state.webhooks.drain()
        assert len(rec.got) == 1 and json.loads(rec.got[0][1])["event"] == "job.cancelled"


async def test_a_callback_registered_while_a_delivery_checks_the_job_is_still_delivered(settings, monkeypatch):
    async with serving(settings, worker=False) as site, receiver() as rec:
        hooks = site.app.state.webhooks
        job_id = await site.engine.submit("generate", {"prompt": "x"}, user_id=A, reply_to={"web_key": 1})
        await site.engine.runner.cancel(job_id, A)
        await hooks.drain()  # the runner's on_done delivery found no callback yet
        looked, gate = asyncio.Event(), asyncio.Event()
        lookup = site.engine.store.apikeys.webhook

        async def slow_first_lookup(jid: int):
            found = await lookup(jid)
            if not looked.is_set():
                looked.set()
                await gate.wait()  # the callback is registered between this read and its answer
            return found

        monkeypatch.setattr(site.engine.store.apikeys, "webhook", slow_first_lookup)
        first = asyncio.create_task(hooks.deliver(job_id))
        await looked.wait()
        key = (await site.engine.store.apikeys.create(A)).key
        await hooks.watch(job_id, key, rec.url)
        gate.set()
        assert await first is True
        await hooks.drain()
        assert len(rec.got) == 1 and json.loads(rec.got[0][1])["event"] == "job.cancelled"
