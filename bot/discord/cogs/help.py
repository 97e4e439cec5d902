"""/help."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog

HELP = """**Atelier** draws, critiques and remembers.
• Mention me, DM me or reply to my messages to talk; attach or reply to an image and ask for a critique,
  or say "use this pose", "in the style of this", "zoom out", "extend to the right".
• `/imagine prompt` — draw (options: preset, style, aspect, count, seed, negative, image, control_image +
  control_type/control_scale to follow a pose/edges/depth, reference_image + reference_mode/reference_scale).
• `/controlmap image type` — preview the control map (edges, pose, depth…) an image gives.
• `/animate prompt [image] [frames] [seed]` — a short MP4 clip from a prompt, or of an image.
• Buttons under results: 🔄 reroll · V1..V4 variations · U1..U4 upscale · ⭐ favorite · ℹ️ info · 🗑️ delete ·
  🔍 zoom out and ⬅️➡️⬆️⬇️ pan (a menu when there are several images).
• `/preset list|show|use|save|delete` — model presets (scope `guild` for admins).
• `/style list|show|add` — prompt styles of this server.
• `/stylecode create|show|revoke|list` — share a style or preset as a short code; `/imagine style_code:X7K2`.
• `/history search` — find your past images; `/gallery` — browse them on the web. `/settings` — your defaults.
• `/queue` — your jobs. `/cancel` — stop one."""


class Help(BotCog):
    @app_commands.command(name="help", description="what Atelier can do")
    async def help(self, interaction: discord.Interaction) -> None:
        await replies.say(interaction, HELP)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Help(bot))
