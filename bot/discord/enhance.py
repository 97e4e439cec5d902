"""✨ E<i> on a draft result: re-render image i at full quality with the same prompt and seed (img2img from it)."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.discord import replies
from bot.discord.target import Target
from bot.usecases.creation import enhance_payload, is_draft
from bot.usecases.errors import UserError
from engine.jobs.result import JobResult

ROW = 4  # rows 0-3 hold the other result buttons and the zoom/pan row
GREEN = discord.ButtonStyle.success


class EnhanceButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:e:(?P<job>[0-9]+):(?P<index>[0-9]+)"):  # noqa: E501
    """E<i>: enhance draft image i (1-based); anyone may click, the new job is theirs."""

    def __init__(self, job_id: int, index: int, *, row: int | None = None):
        self.job_id, self.index = job_id, index
        button = discord.ui.Button(label=f"✨ E{index}", style=GREEN, custom_id=f"atelier:e:{job_id}:{index}", row=row)
        super().__init__(button)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> EnhanceButton:  # noqa: E501
        return cls(int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self._enhance(interaction))

    async def _enhance(self, interaction: discord.Interaction) -> None:
        bot: Any = interaction.client
        await interaction.response.defer(thinking=True)
        source = await bot.services.jobs.get(self.job_id)
        if source is None:
            raise UserError(f"job #{self.job_id} no longer exists")
        uid, gid = interaction.user.id, interaction.guild_id or 0
        payload = await enhance_payload(bot.services, source, self.index - 1, uid, gid)
        new_id = await bot.services.submit(
            "generate", payload, user_id=uid, guild_id=gid, channel_id=interaction.channel_id or 0,
            roles=replies.role_ids(interaction.user),
            reply_to={"message_id": interaction.message.id if interaction.message else None},
        )  # fmt: skip
        label = f"Enhance of #{source.id} image {self.index}"
        await bot.poster.track(new_id, Target(uid, interaction.channel, interaction=interaction, label=label))


def add_enhance(view: discord.ui.View, job_id: int, out: JobResult | None) -> None:
    """Add E1..En to a draft result's buttons (nothing for other results)."""
    if not is_draft(out):
        return
    for i in range(1, min(len(out.images), 5) + 1):  # type: ignore[union-attr]
        view.add_item(EnhanceButton(job_id, i, row=ROW))


ENHANCE_ITEMS = (EnhanceButton,)
