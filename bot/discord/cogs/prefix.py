"""Prefix commands (only with the message_content intent): !imagine, !queue, !cancel, !help."""

from __future__ import annotations

from discord.ext import commands

from bot.discord import replies
from bot.discord.cogs import BotCog
from bot.discord.cogs.help import HELP
from bot.discord.target import Target
from bot.usecases import account, jobs


class Prefix(BotCog):
    @commands.command(name="imagine")
    async def imagine(self, ctx: commands.Context, *, prompt: str) -> None:
        uid, gid = ctx.author.id, ctx.guild.id if ctx.guild else 0
        payload = await account.imagine_payload(self.bot.services, user_id=uid, guild_id=gid, prompt=prompt)
        job_id = await self.bot.services.submit(
            "generate", payload, user_id=uid, guild_id=gid, channel_id=ctx.channel.id,
            roles=replies.role_ids(ctx.author), reply_to={"message_id": ctx.message.id},
        )  # fmt: skip
        msg = await ctx.reply(f"⏳ Job #{job_id} queued…", mention_author=False)
        await self.bot.poster.track(job_id, Target(uid, ctx.channel, message=msg))

    @commands.command(name="queue")
    async def queue(self, ctx: commands.Context) -> None:
        await ctx.reply(await jobs.queue_text(self.bot.services, ctx.author.id), mention_author=False)

    @commands.command(name="cancel")
    async def cancel(self, ctx: commands.Context, job: int | None = None) -> None:
        await ctx.reply(await jobs.cancel_text(self.bot.services, ctx.author.id, job), mention_author=False)

    @commands.command(name="help")
    async def help(self, ctx: commands.Context) -> None:
        await ctx.reply(HELP, mention_author=False)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Prefix(bot))
