"""/variations: N prompt variations from the language model, shown for approval with a Generate all button."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.discord.options import Preset
from bot.discord.variations import variations_view
from bot.usecases.library import preset_of
from bot.usecases.variations import propose, variations_text
from tools.variations import DEFAULT_COUNT, MAX_COUNT, MIN_COUNT, VARIATION_CHARS


class Variations(BotCog):
    @app_commands.command(name="variations", description="Write variations of a prompt, then generate them all")
    @app_commands.describe(
        prompt="what to vary, e.g. 'a cat'",
        count=f"how many variations ({MIN_COUNT}-{MAX_COUNT}, default {DEFAULT_COUNT})",
        preset="generate them with this preset (default: yours or the server's)",
    )
    async def variations(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, VARIATION_CHARS],
        count: app_commands.Range[int, MIN_COUNT, MAX_COUNT] = DEFAULT_COUNT,
        preset: Preset | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        uid, gid = interaction.user.id, interaction.guild_id or 0
        if preset:  # checked now, so Generate all cannot fail on it later
            preset = (await preset_of(self.bot.services, preset, uid, gid))["name"]
        proposal = await propose(self.bot.agent.orchestrator.services, replies.requester(interaction), prompt, count)
        await interaction.edit_original_response(
            content=variations_text(proposal), view=variations_view(uid, preset)
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Variations(bot))
