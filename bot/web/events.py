"""A job's server-sent event stream: queued (position) → running → progress (step %, previews) → final."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from bot.web.views import job_view, progress_of
from engine.core import Engine
from engine.store.jobs import Job

POLL_S = 1.0  # re-read the row this often when nothing arrives (a worker elsewhere, queue moves)
PREVIEW_SIDE = 256


def sse(event: str, data: dict[str, object]) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def preview_uri(preview: object) -> str:
    """A small JPEG data URI of a preview (PNG bytes or a PIL image); blocking: run in a thread."""
    from PIL import Image

    img = Image.open(io.BytesIO(preview)) if isinstance(preview, bytes) else preview
    img = img.convert("RGB")  # type: ignore[union-attr]
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class JobFeed:
    """Runner subscriber for one job: progress and the final row go into a queue the stream reads."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_progress(self, job_id: int, step: int, total: int, preview: object = None) -> None:
        if job_id == self.job_id:
            self.queue.put_nowait(("progress", (step, total, preview)))

    def on_done(self, job: Job) -> None:
        if job.id == self.job_id:
            self.queue.put_nowait(("done", job))


class _Stream:
    """The state of one stream: what was sent last, so repeats are skipped and previews throttled."""

    def __init__(self, engine: Engine, base: str, preview_every_s: float) -> None:
        self.engine, self.base, self.every = engine, base, preview_every_s
        self.position: int | None = None
        self.running = False
        self.step = (-1, -1)
        self.preview_at = float("-inf")

    async def from_row(self, job: Job) -> list[bytes]:
        """Events for what the row shows that was not sent yet (queue moves, a remote worker's steps)."""
        out = []
        if job.state == "queued":
            pos = await self.engine.jobs.position(job.id)
            if pos != self.position:
                self.position = pos
                out.append(sse("queued", {"job_id": job.id, "position": pos}))
        elif job.state == "running":
            out += self.started(job.id)
            p = job.progress or {}
            if p.get("total") and int(p.get("step") or 0) > self.step[0]:
                out += await self.progress(job.id, int(p.get("step") or 0), int(p["total"]), None)
        return out

    def started(self, job_id: int) -> list[bytes]:
        if self.running:
            return []
        self.running = True
        return [sse("running", {"job_id": job_id})]

    async def progress(self, job_id: int, step: int, total: int, preview: object) -> list[bytes]:
        out = self.started(job_id)
        data: dict[str, object] = {"job_id": job_id, **progress_of(step, total)}
        now = time.monotonic()
        if preview is not None and now - self.preview_at >= self.every:
            self.preview_at = now
            data["preview"] = await asyncio.to_thread(preview_uri, preview)
        elif (step, total) == self.step:
            return out
        self.step = (step, total)
        return [*out, sse("progress", data)]

    def final(self, job: Job) -> bytes:
        return sse(job.state, job_view(self.base, job, None))


async def job_events(engine: Engine, request: Request, job_id: int, base: str) -> AsyncIterator[bytes]:
    """The event stream of one job, ending with its final event (done, failed or cancelled)."""
    feed = JobFeed(job_id)
    unsubscribe = engine.runner.subscribe(feed)  # before reading the row: nothing falls between
    state = _Stream(engine, base, request.app.state.settings.web.preview_interval_s)
    try:
        job = await engine.jobs.require(job_id)
        if not job.final:
            for chunk in await state.from_row(job):
                yield chunk
        while not job.final:
            try:
                kind, item = await asyncio.wait_for(feed.queue.get(), POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                job = await engine.jobs.require(job_id)
                if not job.final:
                    for chunk in await state.from_row(job):
                        yield chunk
                continue
            if kind == "done":
                job = item
            else:
                for chunk in await state.progress(job_id, *item):
                    yield chunk
        yield state.final(job)
    finally:
        unsubscribe()
