"""AtelierBot: a commands.Bot that receives its services and agent, loads the cogs and persistent buttons."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.agent import Agent
from bot.discord import best, conversation, describe, enhance, pan, replies, variations, views
from bot.discord.progress import ProgressPoster
from engine.core import Engine
from engine.looplag import LoopWatchdog, Stall

log = logging.getLogger(__name__)
DYNAMIC_ITEMS = (*views.RESULT_ITEMS, pan.OutpaintButton, pan.OutpaintSelect, conversation.FixButton, *describe.DESCRIBE_ITEMS, best.OthersButton, *enhance.ENHANCE_ITEMS, *variations.VARIATION_ITEMS)
COGS = ("chat", "imagine", "controlmap", "presets", "styles", "history", "settings", "queue", "help", "describe", "blend", "gallery", "apikey", "compare", "export", "variations", "stylecodes", "animate")


def intents_for(message_content: bool) -> discord.Intents:
    """Default intents; the privileged message_content one only when configured."""
    intents = discord.Intents.default()
    intents.message_content = message_content
    return intents


class AtelierBot(commands.Bot):
    """The Discord front. Cogs stay thin: parse, defer, call the agent/services, render."""

    def __init__(self, services: Engine, agent: Agent, *, sync_commands: bool = False, **options: Any):
        self.settings = services.settings
        d = self.settings.discord
        self.prefix_commands = d.message_content_intent
        options.setdefault("intents", intents_for(d.message_content_intent))
        super().__init__(
            command_prefix=d.command_prefix if self.prefix_commands else [],
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **options,
        )
        self.services = services
        self.agent = agent
        self.sync_commands = sync_commands
        self.poster = ProgressPoster(self, services, interval_s=d.progress_edit_interval_s)
        self._unsubscribe: Any = None
        self.tree.on_error = self.on_app_command_error
        self.watchdog: LoopWatchdog | None = None

    async def setup_hook(self) -> None:
        """Load cogs, register persistent buttons, subscribe to job events, watch the loop, maybe sync commands."""
        self.watchdog = LoopWatchdog(observe=self._observe_lag, on_stall=self._count_stall).start()
        for name in COGS:
            await self.load_extension(f"bot.discord.cogs.{name}")
        if self.prefix_commands:
            await self.load_extension("bot.discord.cogs.prefix")
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        self._unsubscribe = self.services.runner.subscribe(self.poster)
        if self.sync_commands:
            await self._sync()

    def _observe_lag(self, seconds: float) -> None:
        metrics = self.services.metrics
        if metrics is not None:
            metrics.loop_lag.observe(seconds)

    def _count_stall(self, stall: Stall) -> None:
        metrics = self.services.metrics
        if metrics is not None:
            metrics.loop_stalls.inc()

    async def _sync(self) -> None:
        """Publish the slash commands; a refused sync is logged and the bot runs on with the last published set."""
        try:
            for gid in self.settings.discord.sync_guilds:
                guild = discord.Object(id=gid)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            if not self.settings.discord.sync_guilds:
                await self.tree.sync()
        except discord.HTTPException as e:
            log.warning("slash commands not synced (Discord said %s %s): the last published set stays", e.status, e.text)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Every slash-command failure becomes a specific ephemeral message."""
        await replies.fail(interaction, replies.error_text(error))

    async def on_command_error(self, ctx: commands.Context, error: commands.CommandError) -> None:
        """Prefix-command failures (intent on) are answered in the channel."""
        if isinstance(error, commands.CommandNotFound):
            return
        original = getattr(error, "original", error)
        await ctx.reply(replies.error_text(original), mention_author=False)

    async def close(self) -> None:
        """Stop listening to jobs and finish posts in flight before closing the connection."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.poster.close()
        if self.watchdog is not None:
            self.watchdog.stop()
        await super().close()
