"""/compare: one prompt across presets, schedulers or seeds — one labelled grid plus each single image."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import render, replies
from bot.discord.cogs import BotCog
from bot.discord.options import Preset, Prompt, Seed
from bot.discord.target import Target
from bot.usecases import compare
from bot.usecases.errors import UserError

EXAMPLES = {"presets": "sdxl,sd15", "schedulers": "euler,dpm++", "seeds": "1,2,3"}
AXIS_HELP = {axis: f"{axis} to compare, comma-separated (e.g. {e})" for axis, e in EXAMPLES.items()}
AxisValues = app_commands.Range[str, 1, 300] | None  # one axis's comma-separated values (give exactly one)


class Compare(BotCog):
    @app_commands.command(name="compare", description="draw one prompt across presets, schedulers or seeds")
    @app_commands.describe(
        seed="the seed every tile uses when presets or schedulers are compared",
        preset="the preset of every tile when schedulers or seeds are compared",
        prompt="what to draw", **AXIS_HELP,
    )  # fmt: skip
    async def compare(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        presets: AxisValues = None,
        schedulers: AxisValues = None,
        seeds: AxisValues = None,
        seed: Seed | None = None,
        preset: Preset | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        given = {k: v for k, v in (("presets", presets), ("schedulers", schedulers), ("seeds", seeds)) if v}
        if len(given) != 1:
            raise UserError("give exactly one of presets, schedulers or seeds to compare")
        (axis, raw), = given.items()
        services, uid = self.bot.services, interaction.user.id
        cmp = await compare.submit_compare(
            services, user_id=uid, guild_id=interaction.guild_id or 0, prompt=prompt, axis=axis, raw=raw,
            seed=seed, preset=preset, channel_id=interaction.channel_id or 0, roles=replies.role_ids(interaction.user),
        )  # fmt: skip
        for t in cmp.tiles:  # each single image gets its own message (progress, then the image and buttons)
            await self.bot.poster.track(t.job_id, Target(uid, interaction.channel, label=f"{axis}: {t.label}"))
        await interaction.edit_original_response(content=f"Comparing {len(cmp.tiles)} {axis}… " + ", ".join(
            f"{t.label} (job #{t.job_id})" for t in cmp.tiles
        ))
        await compare.finish_compare(services, cmp)
        text = render.split_text(cmp.text())[0]
        if cmp.grid is None:
            await interaction.edit_original_response(content=text)
            return
        data = await asyncio.to_thread(Path(cmp.grid).read_bytes)
        limit = services.settings.images.upload_limit_bytes
        data, name = await asyncio.to_thread(render.fit_upload, data, limit, Path(cmp.grid).name)
        await interaction.edit_original_response(content=text, attachments=[discord.File(io.BytesIO(data), name)])


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Compare(bot))
