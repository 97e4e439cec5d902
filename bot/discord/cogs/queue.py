"""/queue and /cancel."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.usecases import jobs


class Queue(BotCog):
    @app_commands.command(name="queue", description="your queued and running jobs")
    async def queue(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say_long(interaction, await jobs.queue_text(self.bot.services, interaction.user.id))

    @app_commands.command(name="cancel", description="cancel a job (default: your newest)")
    async def cancel(
        self, interaction: discord.Interaction, job: app_commands.Range[int, 1] | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say(interaction, await jobs.cancel_text(self.bot.services, interaction.user.id, job))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Queue(bot))
