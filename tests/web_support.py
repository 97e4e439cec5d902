"""Helpers for the web API tests: a real demo Engine (tiny models) behind the real app on a real uvicorn."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from PIL import Image

from bot.web.app import create_app
from bot.web.server import WebServer
from engine.config import Generation, Gpu, Images, Paths, Queue, Settings, Web
from engine.core import Engine

A, B, GUILD = 101, 202, 900


def web_settings(tmp: Path, demo_models: Path, **web: object) -> Settings:
    """Small limits, CPU, the cached tiny demo models; fast webhook retries."""
    return Settings(
        paths=Paths(data_dir=str(tmp / "data"), demo_models=str(demo_models)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, preview_every_steps=1),
        images=Images(max_input_bytes=100_000, max_input_pixels=1024 * 1024),
        queue=Queue(max_per_user=2, daily_quota=6, lease_s=30.0),
        web=Web(**{"webhook_backoff_s": 0.05, "webhook_timeout_s": 5.0, "rate_burst": 200, **web}),
    )


@dataclass
class Site:
    """The running web front: engine, app, server and a client for it."""

    engine: Engine
    app: FastAPI
    server: WebServer
    client: httpx.AsyncClient

    async def key(self, user_id: int = A, guild_id: int = 0) -> dict[str, str]:
        """Authorization headers of a new key for (user, guild)."""
        new = await self.engine.store.apikeys.create(user_id, guild_id)
        return {"Authorization": f"Bearer {new.token}"}


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, *, worker: bool = True, with_agent: bool = False
) -> AsyncIterator[Site]:
    """Engine.start(demo=True) (with_agent: the whole App) + create_app + uvicorn on a free port + a client."""
    from bot.app import App

    app_ = await App.start(settings, demo=True) if with_agent else None
    engine = (
        app_.engine
        if app_ is not None
        else await Engine.start(settings, demo=True, worker=worker, poll_s=0.05)
    )
    try:
        app = create_app(engine, app_.agent if app_ is not None else None, settings)
        server = await WebServer(app, "127.0.0.1", 0).start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                yield Site(engine, app, server, client)
        finally:
            await server.stop()
    finally:
        await engine.stop()


def png_bytes(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A small valid PNG."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


async def read_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    event, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and event:
            yield event, data
            event, data = "", ""
