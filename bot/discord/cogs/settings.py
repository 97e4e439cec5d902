"""/settings — your defaults for /imagine (shown when called without options)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.discord.options import Aspect, Preset, Style
from bot.usecases import account


class Settings(BotCog):
    @app_commands.command(name="settings", description="show or change your /imagine defaults")
    @app_commands.describe(
        clear="forget every default not given here",
        cache="reuse the stored images of an identical request with the same seed (default on)",
        draft="fast draft previews by default (Enhance the ones you like)",
    )
    async def settings(
        self,
        interaction: discord.Interaction,
        preset: Preset | None = None,
        style: Style | None = None,
        aspect: Aspect | None = None,
        negative: app_commands.Range[str, 0, 1000] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        cache: bool | None = None,
        draft: bool | None = None,
        clear: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await account.settings_update(
            self.bot.services, interaction.user.id, interaction.guild_id or 0, clear,
            preset=preset, style=style, aspect=aspect, negative=negative, count=count, cache=cache,
            draft=draft,
        )  # fmt: skip
        await replies.say(interaction, text)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Settings(bot))
