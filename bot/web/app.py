"""The web app factory: `create_app(engine, agent, settings)` → FastAPI (API under /v1, docs at /docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from bot.web.api import router as api_router
from bot.web.api_library import router as library_router
from bot.web.auth import RateLimiter
from bot.web.errors import install_error_handlers
from bot.web.gallery import router as gallery_router
from bot.web.thumbs import Thumbnailer
from bot.web.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from bot.agent import Agent
    from engine.config import Settings
    from engine.core import Engine


def create_app(engine: Engine, agent: Agent | None, settings: Settings) -> FastAPI:
    """The FastAPI app of the web front; `app.state` holds engine, agent and settings for the routes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.webhooks.resume()  # webhooks an earlier process left undelivered
        try:
            yield
        finally:
            await app.state.webhooks.close()
            unsubscribe_thumbs()

    app = FastAPI(
        title="Atelier", version="1", docs_url="/docs", openapi_url="/openapi.json", lifespan=lifespan
    )
    app.state.engine, app.state.agent, app.state.settings = engine, agent, settings
    app.state.limiter = RateLimiter(settings.web)
    app.state.webhooks = WebhookDispatcher(engine, settings.web)
    app.state.gallery_thumbs = Thumbnailer(engine)  # every new image gets its grid thumbnail in the background
    unsubscribe_thumbs = engine.runner.subscribe(app.state.gallery_thumbs)
    install_error_handlers(app)
    if settings.web.cors_origins:  # CORS is off unless origins are configured
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.web.cors_origins),
                           allow_methods=["*"], allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    app.include_router(api_router)
    app.include_router(library_router)
    app.include_router(gallery_router)
    return app
