"""/describe: four prompts the vision model would write for an image, each with a Generate button."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.discord.describe import describe_view
from bot.discord.options import Preset
from bot.usecases import guided
from bot.usecases.describe import describe_image, describe_text


class Describe(BotCog):
    @app_commands.command(name="describe", description="Suggest prompts that would make an image")
    @app_commands.describe(
        image="the picture to describe (default: your latest image)",
        preset="write the prompts for this preset's model (default: yours or the server's)",
    )
    async def describe(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment | None = None,
        preset: Preset | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        data = (await guided.read_image(self.bot.services, "image", image))[0] if image is not None else None
        who = replies.requester(interaction)
        result = await describe_image(self.bot.agent.orchestrator.services, who, image=data, preset=preset)
        await interaction.edit_original_response(content=describe_text(result), view=describe_view(result))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Describe(bot))
