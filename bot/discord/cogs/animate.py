"""/animate: defer at once, store the image (if any), enqueue an 'animate' job; the poster posts the MP4."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import complete, replies
from bot.discord.target import Target
from bot.usecases import guided
from bot.usecases.animate import animate_label, animate_payload
from engine.runtime.diffusion.request import MAX_SEED, PROMPT_MAX_CHARS


class Animate(commands.Cog):
    def __init__(self, bot: Any):
        self.bot = bot

    @app_commands.command(name="animate", description="Make a short video from a prompt, or animate an image")
    @app_commands.describe(
        prompt="what happens in the clip",
        image="animate this image (image-to-video)",
        frames="how many frames (default: the video model's, e.g. 16)",
        seed="seed for reproducible results",
        preset="video preset (default: the server's)",
    )
    @app_commands.autocomplete(preset=complete.presets)
    async def animate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        image: discord.Attachment | None = None,
        frames: app_commands.Range[int, 2, 256] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        preset: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        engine = self.bot.services
        path = await guided.save_image(engine, "image", image) if image is not None else None
        payload = animate_payload(prompt, image=path, frames=frames, seed=seed, preset=preset)
        uid, gid = interaction.user.id, interaction.guild_id or 0
        job_id = await engine.submit(
            "animate", payload, user_id=uid, guild_id=gid, channel_id=interaction.channel_id or 0,
            roles=replies.role_ids(interaction.user), reply_to={"interaction_id": interaction.id},
        )  # fmt: skip
        target = Target(
            uid, interaction.channel, interaction=interaction, label=animate_label(path is not None)
        )
        await self.bot.poster.track(job_id, target)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Animate(bot))
