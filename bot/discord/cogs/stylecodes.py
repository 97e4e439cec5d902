"""/stylecode create|show|revoke|list — share a style or preset as a short code (answers are ephemeral)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.discord.options import Code, Preset, Style
from bot.usecases import style_codes
from bot.usecases.errors import UserError


class StyleCodes(BotCog, commands.GroupCog, group_name="stylecode", group_description="shareable style codes"):
    @app_commands.command(name="create", description="share a style or a preset as a short code")
    @app_commands.describe(
        style="a style from /style list", preset="a preset from /preset list",
        public="anyone, in any server, may use it (default: this server only)",
    )  # fmt: skip
    async def create(
        self, interaction: discord.Interaction, style: Style | None = None,
        preset: Preset | None = None, public: bool = False,
    ) -> None:  # fmt: skip
        await interaction.response.defer(ephemeral=True, thinking=True)
        if (style is None) == (preset is None):
            raise UserError("give exactly one of style or preset")
        kind, name = ("style", style) if style is not None else ("preset", preset or "")
        text = await style_codes.create(
            self.bot.services, kind, name, user_id=interaction.user.id, guild_id=interaction.guild_id or 0,
            public=public, is_admin=replies.is_admin(interaction),
        )  # fmt: skip
        await replies.say(interaction, text)

    @app_commands.command(name="show", description="what a style code expands to and who made it")
    async def show(self, interaction: discord.Interaction, code: Code) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await style_codes.show(self.bot.services, code, interaction.user.id, interaction.guild_id or 0)
        await replies.say_long(interaction, text)

    @app_commands.command(name="revoke", description="stop one of your style codes from working")
    async def revoke(self, interaction: discord.Interaction, code: Code) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say(interaction, await style_codes.revoke(self.bot.services, code, interaction.user.id))

    @app_commands.command(name="list", description="style codes you can use here")
    async def list_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await style_codes.listing(self.bot.services, interaction.user.id, interaction.guild_id or 0)
        await replies.say_long(interaction, text)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(StyleCodes(bot))
