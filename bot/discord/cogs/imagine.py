"""/imagine: defer at once, validate, enqueue, then the progress poster owns the message."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import bridge, complete, ops
from bot.discord.progress import Target
from engine.diffusion.request import ASPECTS

MAX_SEED = 2**53 - 1  # Discord integer options are limited to ±2^53


class Imagine(commands.Cog):
    def __init__(self, bot: Any):
        self.bot = bot

    @app_commands.command(name="imagine", description="Draw images from a prompt")
    @app_commands.describe(
        prompt="what to draw",
        preset="model preset (default: yours or the server's)",
        style="a style from /style list",
        aspect="image shape",
        count="how many images (1-4)",
        seed="seed for reproducible results",
        negative="what to avoid",
        image="start from this image (img2img)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    @app_commands.autocomplete(preset=complete.presets, style=complete.styles)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1500],
        preset: app_commands.Range[str, 1, 64] | None = None,
        style: app_commands.Range[str, 1, 64] | None = None,
        aspect: str | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        negative: app_commands.Range[str, 0, 1000] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        services = self.bot.services
        init = None
        if image is not None:
            limit = bridge.settings_of(services).images.max_input_bytes
            if image.size > limit:
                raise bridge.UserError(f"{image.filename} is over the {limit / 2**20:.0f} MB image limit")
            init = await bridge.save_upload(services, await image.read(), image.filename)
        uid, gid = interaction.user.id, interaction.guild_id or 0
        payload = await ops.imagine_payload(
            services, user_id=uid, guild_id=gid, prompt=prompt, preset=preset, style=style,
            aspect=aspect, count=count, seed=seed, negative=negative, init_image=init,
        )  # fmt: skip
        job_id = await bridge.submit(
            services, "generate", payload, user_id=uid, guild_id=gid,
            channel_id=interaction.channel_id or 0, reply_to={"interaction_id": interaction.id},
        )  # fmt: skip
        await self.bot.poster.track(job_id, Target(uid, interaction.channel, interaction=interaction))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Imagine(bot))
