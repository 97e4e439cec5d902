"""@mention, DM and reply-to-bot messages go to the agent (typing indicator while it thinks)."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.discord import conversation
from bot.discord.cogs import BotCog


class Chat(BotCog):
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if not conversation.addressed(self.bot, message):
            return
        if getattr(self.bot, "prefix_commands", False) and (await self.bot.get_context(message)).valid:
            return  # a prefix command handles it
        await conversation.handle_message(self.bot, message)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Chat(bot))
