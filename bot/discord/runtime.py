"""`atelier run`: the App plus the Discord bot."""

from __future__ import annotations

import logging

from bot.app import App
from engine.config import Settings

log = logging.getLogger("atelier.run")


async def run_bot(settings: Settings, token: str, *, demo: bool, web: bool = False) -> None:
    """Start everything and run the bot until it is closed (web: the web front beside it, same process)."""
    from bot.discord.bot import AtelierBot

    app = await App.start(settings, demo=demo)
    server = None
    try:
        if settings.metrics.enabled:
            await app.engine.serve_metrics()
        if web:
            from bot.web.app import create_app
            from bot.web.server import WebServer

            site = create_app(app.engine, app.agent, settings)
            server = await WebServer(site, settings.web.host, settings.web.port).start()
            log.info("web front on %s (API docs: %s/docs)", server.url, server.url)
        async with AtelierBot(app.engine, app.agent, sync_commands=True) as bot:
            await bot.start(token)
    finally:
        if server is not None:
            await server.stop()
        await app.stop()
