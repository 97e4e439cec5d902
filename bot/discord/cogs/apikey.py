"""/apikey create|list|revoke — web API keys acting as you in this server (replies are ephemeral)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.usecases import apikeys


class ApiKey(BotCog, commands.GroupCog, group_name="apikey", group_description="keys for the Atelier web API"):
    @property
    def keys(self) -> Any:
        return self.bot.services.store.apikeys

    @app_commands.command(
        name="create", description="a new API key acting as you here (shown once, only to you)"
    )
    @app_commands.describe(name="a label to tell your keys apart")
    async def create(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 0, 60] = ""
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        key = await apikeys.create_key(self.keys, interaction.user.id, interaction.guild_id or 0, name)
        text = apikeys.created_text(key, self.bot.services.settings.web.public_url)
        await interaction.followup.send(text, ephemeral=True, suppress_embeds=True)

    @app_commands.command(name="list", description="your API keys in this server")
    async def list_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await apikeys.list_text(self.keys, interaction.user.id, interaction.guild_id or 0)
        await replies.say_long(interaction, text)

    @app_commands.command(name="revoke", description="stop one of your API keys from working")
    @app_commands.describe(key_id="the key's number, from /apikey list")
    async def revoke(self, interaction: discord.Interaction, key_id: app_commands.Range[int, 1]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say(interaction, await apikeys.revoke_key(self.keys, interaction.user.id, key_id))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ApiKey(bot))
