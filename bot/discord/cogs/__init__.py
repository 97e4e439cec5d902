"""Thin cogs: each parses options, defers, calls a use-case (bot.usecases) or the agent, and renders."""

from __future__ import annotations

from typing import Any

from discord.ext import commands


class BotCog(commands.Cog):
    """A cog that keeps its bot (services, agent and progress poster); the base of every Atelier cog."""

    def __init__(self, bot: Any):
        self.bot = bot
