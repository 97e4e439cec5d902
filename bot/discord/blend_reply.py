"""'blend these' on a message with several images: a /blend of them, without asking the agent."""

from __future__ import annotations

from typing import Any

import discord

from bot.discord import replies
from bot.discord.target import Target
from bot.usecases import blend
from bot.usecases.agent import TurnSpec


async def maybe_blend(bot: Any, message: discord.Message, spec: TurnSpec) -> bool:
    """Queue a blend when the turn asks for one and carries images; True when the message was answered."""
    if not spec.attachments or not blend.asks_to_blend(spec.text):
        return False
    engine = bot.services
    try:
        own = list(message.attachments)  # all of them: the agent's turn reads only the first few
        if own:
            paths = await blend.save_uploads(engine, own)
        else:
            paths = await blend.save_attachments(engine.settings, spec.attachments)
        payload = await blend.blend_payload(engine, paths, user_id=spec.user_id, guild_id=spec.guild_id)
        job_id = await engine.submit(
            "generate", payload, user_id=spec.user_id, guild_id=spec.guild_id, channel_id=spec.channel_id,
            roles=spec.roles, reply_to=spec.reply_to,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the user always gets an answer; unexpected errors are logged
        await message.reply(replies.error_text(e), mention_author=False)
        return True
    text = blend.blend_text(job_id, len(paths), payload["reference_weights"])
    msg = await message.reply(f"⏳ {text}", mention_author=False)
    await bot.poster.track(job_id, Target(spec.user_id, message.channel, message=msg, label=f"Blend of {len(paths)}"))
    return True
