"""Webhooks: when an API job ends, POST its result to the callback URL, signed with the key's secret.

Signature: `X-Atelier-Signature: t=<unix ts>,v1=<hex hmac_sha256(secret, f"{t}.{body}")>`. Delivery runs in
background tasks (a runner subscriber spawns them), retries 5xx, 429 and network errors with exponential
backoff, never retries another 4xx, and records every attempt in the store (webhook_deliveries).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import httpx

from bot.web.views import job_view
from engine.config import Web
from engine.core import Engine
from engine.store.apikeys import ApiKey
from engine.store.jobs import Job

log = logging.getLogger("atelier.web.webhooks")
MAX_RETRY_AFTER_S = 300.0
SIGNATURE_HEADER = "X-Atelier-Signature"


def sign(secret: str, body: bytes, ts: int) -> str:
    """The signature header value for a body sent at unix time `ts`."""
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(
    secret: str, body: bytes, header: str, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """Whether a signature header matches the body and is recent (what a receiver should check)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, ts), header)


def is_web_job(job: Job) -> bool:
    """Whether the web API submitted this job (its result is delivered here, not posted to Discord)."""
    return "web_key" in job.reply_to


def event_body(job: Job, base: str) -> bytes:
    """The JSON a webhook carries: the event name and the job as GET /v1/jobs/{id} shows it."""
    data = {"event": f"job.{job.state}", "job": job_view(base, job, None)}
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str).encode()


def _retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


def _retry_after(resp: httpx.Response | None) -> float:
    value = resp.headers.get("retry-after", "") if resp is not None else ""
    return min(float(value), MAX_RETRY_AFTER_S) if value.isdigit() else 0.0


class WebhookDispatcher:
    """Runner subscriber: claims finished web jobs (mark_posted) and delivers their webhooks in the background."""

    def __init__(self, engine: Engine, web: Web) -> None:
        self.engine, self.web = engine, web
        self.tasks: set[asyncio.Task] = set()
        self.inflight: set[int] = set()
        self.recheck: set[int] = set()  # jobs whose callback was registered during their delivery's checks
        self.client: httpx.AsyncClient | None = None
        self.sleep = asyncio.sleep  # the backoff waits (tests record them)
        self._unsubscribe = engine.runner.subscribe(self)

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_done(self, job: Job) -> None:
        """A job ended: if the web API made it, claim it and deliver its webhook (never on this call's path)."""
        if is_web_job(job):
            self._spawn(self._claim_and_deliver(job.id))

    async def _claim_and_deliver(self, job_id: int) -> None:
        await self.engine.jobs.mark_posted(job_id)  # so no Discord poster tries to post it
        await self.deliver(job_id)

    async def watch(self, job_id: int, key: ApiKey, url: str) -> None:
        """Register a job's callback; deliver at once if the job already ended."""
        await self.engine.store.apikeys.add_webhook(job_id, key.id, url)
        job = await self.engine.jobs.get(job_id)
        if job is not None and job.final:
            self._spawn(self.deliver(job_id))

    async def resume(self) -> int:
        """Deliver webhooks left unsettled by an earlier process whose jobs have ended; how many."""
        started = 0
        for job_id in await self.engine.store.apikeys.undelivered(limit=1000):
            job = await self.engine.jobs.get(job_id)
            if job is not None and job.final:
                self._spawn(self.deliver(job_id))
                started += 1
        return started

    async def deliver(self, job_id: int) -> bool:
        """POST the job's result to its callback until it is accepted, refused (4xx) or out of attempts."""
        if job_id in self.inflight:
            self.recheck.add(job_id)  # the delivery in flight may have looked before this callback existed
            return False
        self.inflight.add(job_id)
        try:
            while True:
                self.recheck.discard(job_id)
                hook = await self.engine.store.apikeys.webhook(job_id)
                job = await self.engine.jobs.get(job_id)
                if hook is not None and job is not None and job.final:
                    url, key = hook
                    return await self._attempts(job, key, url)
                if job_id not in self.recheck:
                    return False
        finally:
            self.inflight.discard(job_id)
            self.recheck.discard(job_id)

    async def _attempts(self, job: Job, key: ApiKey, url: str) -> bool:
        body = event_body(job, self.web.public_url.rstrip("/"))
        ok = False
        for attempt in range(1, self.web.webhook_attempts + 1):
            status, error, resp = await self._post(url, key, body, job.id)
            ok = status is not None and 200 <= status < 300
            await self.engine.store.apikeys.record_delivery(job.id, key.id, url, attempt, status, error, ok)
            if ok or not _retryable(status) or attempt == self.web.webhook_attempts:
                break
            backoff = self.web.webhook_backoff_s * 2 ** (attempt - 1)
            await self.sleep(max(backoff, _retry_after(resp)))
        await self.engine.store.apikeys.settle_webhook(job.id)
        if not ok:
            log.warning("webhook of job %s to %s failed after %s attempt(s)", job.id, url, attempt)
        return ok

    async def _post(
        self, url: str, key: ApiKey, body: bytes, job_id: int
    ) -> tuple[int | None, str | None, httpx.Response | None]:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.web.webhook_timeout_s, follow_redirects=False)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Atelier-Webhook/1",
            "X-Atelier-Job": str(job_id),
            SIGNATURE_HEADER: sign(key.webhook_secret, body, int(time.time())),
        }
        try:
            resp = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {e}", None
        return resp.status_code, None if resp.is_success else resp.text[:200], resp

    async def drain(self) -> None:
        """Wait for every delivery started so far (tests, shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop listening, cancel deliveries in flight (resume() picks them up next time), close the client."""
        self._unsubscribe()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*list(self.tasks), return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()
            self.client = None
