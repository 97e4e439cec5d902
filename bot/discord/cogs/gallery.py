"""/gallery — a private, single-use sign-in link to your images on the web."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.cogs import BotCog
from bot.usecases import gallery


class Gallery(BotCog):
    @app_commands.command(name="gallery", description="get a private sign-in link to your web gallery")
    async def gallery(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        url = await gallery.login_link(self.bot.services, interaction.user.id, interaction.guild_id or 0)
        minutes = gallery.LOGIN_TTL_S // 60
        # <...> and suppress_embeds keep Discord from fetching (and so using up) the link for a preview
        text = f"Your gallery: <{url}>\nIt works once and expires in {minutes} minutes; don't share it."
        await interaction.followup.send(text, ephemeral=True, suppress_embeds=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Gallery(bot))
