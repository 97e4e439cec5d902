"""/blend: two to five images mixed into one (IP-Adapter or FLUX Redux, a weight per image); the poster owns the message."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.cogs import BotCog
from bot.discord.items import submit_tracked
from bot.discord.options import Aspect, Preset, Prompt, Seed
from bot.usecases import blend


class Blend(BotCog):
    @app_commands.command(name="blend", description="Blend 2-5 images into one")
    @app_commands.describe(
        image1="first image", image2="second image", image3="third image (optional)",
        image4="fourth image (optional)", image5="fifth image (optional)",
        weights="how much each image counts, in order, e.g. 1,0.5 (0-2, default 1 each)",
        prompt="optional words to steer the blend", preset="model preset (sd15 or sdxl family)",
        aspect="image shape", seed="seed for reproducible results",
    )  # fmt: skip
    async def blend(
        self,
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        weights: app_commands.Range[str, 1, 60] | None = None,
        prompt: Prompt | None = None,
        preset: Preset | None = None,
        aspect: Aspect | None = None,
        seed: Seed | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        engine = self.bot.services
        uploads = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        uid, gid = interaction.user.id, interaction.guild_id or 0
        blend.check_count(len(uploads))
        blend.parse_weights(weights, len(uploads))  # before anything is downloaded
        paths = await blend.save_uploads(engine, uploads)
        payload = await blend.blend_payload(
            engine, paths, user_id=uid, guild_id=gid, weights=weights, prompt=prompt, preset=preset,
            aspect=aspect, seed=seed,
        )  # fmt: skip
        await submit_tracked(interaction, "generate", payload, label=f"Blend of {len(paths)} images")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Blend(bot))
