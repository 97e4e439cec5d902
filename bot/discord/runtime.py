"""Wiring for `atelier run`: the shared runtime plus the Discord bot."""

from __future__ import annotations

from bot.runtime import ArbiterChat, build, check_models
from engine.config import Settings

__all__ = ["ArbiterChat", "build", "check_models", "run_bot"]


async def run_bot(settings: Settings, token: str, *, demo: bool) -> None:
    """Start everything and run the bot until it is closed."""
    from bot.discord.bot import AtelierBot

    services, agent = await build(settings, demo=demo)
    try:
        if settings.metrics.enabled:
            await services.serve_metrics()
        async with AtelierBot(services, agent, sync_commands=True) as bot:
            await bot.start(token)
    finally:
        await services.stop()
