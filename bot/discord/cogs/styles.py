"""/style list|show|add — the server's prompt styles."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.discord.options import Name, Style
from bot.usecases import library


class Styles(BotCog, commands.GroupCog, group_name="style", group_description="prompt styles"):
    @app_commands.command(name="list", description="styles you can use")
    async def list_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say_long(
            interaction, await library.style_list(self.bot.services, interaction.guild_id or 0)
        )

    @app_commands.command(name="show", description="a style's template")
    async def show(self, interaction: discord.Interaction, name: Style) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say_long(
            interaction, await library.style_show(self.bot.services, name, interaction.guild_id or 0)
        )

    @app_commands.command(name="add", description="add a style to this server ({prompt} marks the prompt)")
    async def add(
        self,
        interaction: discord.Interaction,
        name: Name,
        template: app_commands.Range[str, 1, 1000],
        negative: app_commands.Range[str, 0, 1000] = "",
        description: app_commands.Range[str, 0, 200] = "",
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await library.style_add(
            self.bot.services, name, template, guild_id=interaction.guild_id or 0, user_id=interaction.user.id,
            is_admin=replies.is_admin(interaction), negative=negative, description=description,
        )  # fmt: skip
        await replies.say(interaction, text)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Styles(bot))
