"""/animate: defer at once, store the image (if any), enqueue an 'animate' job; the poster posts the MP4."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.cogs import BotCog
from bot.discord.items import submit_tracked
from bot.discord.options import Preset, Prompt, Seed
from bot.usecases import guided
from bot.usecases.animate import animate_label, animate_payload


class Animate(BotCog):
    @app_commands.command(name="animate", description="Make a short video from a prompt, or animate an image")
    @app_commands.describe(
        prompt="what happens in the clip", image="animate this image (image-to-video)",
        frames="how many frames (default: the video model's, e.g. 16)", seed="seed for reproducible results",
        preset="video preset (default: the server's)",
    )  # fmt: skip
    async def animate(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        image: discord.Attachment | None = None,
        frames: app_commands.Range[int, 2, 256] | None = None,
        seed: Seed | None = None,
        preset: Preset | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        path = await guided.save_image(self.bot.services, "image", image) if image is not None else None
        payload = animate_payload(prompt, image=path, frames=frames, seed=seed, preset=preset)
        await submit_tracked(interaction, "animate", payload, label=animate_label(path is not None))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Animate(bot))
