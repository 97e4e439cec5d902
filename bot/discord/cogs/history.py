"""/history search — your past generations (or the server's)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.usecases import account


class History(BotCog, commands.GroupCog, group_name="history", group_description="your past generations"):
    @app_commands.command(name="search", description="find past generations by prompt words")
    @app_commands.describe(query="words to look for (empty: most recent)", server="include the whole server")
    async def search(
        self,
        interaction: discord.Interaction,
        query: app_commands.Range[str, 0, 500] = "",
        server: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await account.history_search(
            self.bot.services, query, interaction.user.id, interaction.guild_id or 0, server
        )
        await replies.say_long(interaction, text)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(History(bot))
