"""/controlmap: show the control map (edges, pose, depth...) an image gives, before generating with it."""

from __future__ import annotations

import asyncio
import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import render
from bot.discord.cogs import BotCog
from bot.discord.options import ControlType
from bot.usecases import guided


class ControlMap(BotCog):
    @app_commands.command(name="controlmap", description="Preview the control map an image gives /imagine")
    @app_commands.describe(image="the picture to analyse", kind="which map to make (default: canny edges)")
    @app_commands.rename(kind="type")
    async def controlmap(
        self, interaction: discord.Interaction, image: discord.Attachment, kind: ControlType = guided.DEFAULT_CONTROL
    ) -> None:
        await interaction.response.defer(thinking=True)
        engine = self.bot.services
        kind = guided.canonical_type("type", kind)
        _, img = await guided.read_image(engine, "image", image)
        result = await guided.control_map(engine, kind, img)
        limit = engine.settings.images.upload_limit_bytes

        def encode() -> tuple[bytes, str]:
            return render.fit_upload(render.png_of(result), limit, f"control-{kind}.png")

        data, name = await asyncio.to_thread(encode)
        await interaction.edit_original_response(
            content=guided.control_map_text(kind, image.filename),
            attachments=[discord.File(io.BytesIO(data), filename=name)],
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ControlMap(bot))
