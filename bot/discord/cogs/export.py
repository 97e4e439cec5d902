"""/export — your favorite images as a training dataset (images, captions, metadata.jsonl), DMed as zips."""

from __future__ import annotations

import asyncio
import io
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.usecases import export


def upload_limit() -> int:
    """Bytes one DM attachment may have (DMs get discord.py's default limit)."""
    return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES


class Export(BotCog):
    @app_commands.command(name="export", description="get your favorites as a dataset zip in your DMs")
    @app_commands.describe(format="kohya (folder + .txt captions) or jsonl (metadata.jsonl with captions)")
    async def export(self, interaction: discord.Interaction, format: Literal["kohya", "jsonl"] = "kohya") -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        services = self.bot.services
        items = await export.collect(services.store, interaction.user.id, outputs=services.settings.path("outputs"))
        parts = await asyncio.to_thread(export.zip_parts, items, format, upload_limit())
        try:
            for i, part in enumerate(parts, 1):
                name = f"atelier-{format}-{i}of{len(parts)}.zip" if len(parts) > 1 else f"atelier-{format}.zip"
                text = f"Your {format} dataset: {len(items)} image(s)" + (
                    f", part {i} of {len(parts)}" if len(parts) > 1 else ""
                )
                await interaction.user.send(text, file=discord.File(io.BytesIO(part), filename=name))
        except discord.Forbidden:
            await replies.say(interaction, "⚠️ I cannot DM you; allow direct messages from this server's members")
            return
        except discord.HTTPException as e:
            if e.status == 413 or e.code == 40005:
                await replies.say(interaction, "⚠️ Discord refused the zip as too large; unfavorite some images")
                return
            raise
        await replies.say(interaction, f"Sent {len(items)} image(s) in {len(parts)} zip(s) to your DMs.")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Export(bot))
