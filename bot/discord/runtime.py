"""`atelier run`: the App plus the Discord bot."""

from __future__ import annotations

from bot.app import App
from engine.config import Settings


async def run_bot(settings: Settings, token: str, *, demo: bool) -> None:
    """Start everything and run the bot until it is closed."""
    from bot.discord.bot import AtelierBot

    app = await App.start(settings, demo=demo)
    try:
        if settings.metrics.enabled:
            await app.engine.serve_metrics()
        async with AtelierBot(app.engine, app.agent, sync_commands=True) as bot:
            await bot.start(token)
    finally:
        await app.stop()
