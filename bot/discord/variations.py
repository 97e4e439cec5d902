"""The /variations proposal's "Generate all" button: queues every variation in the message as one batch.

The prompts live in the message itself (bot/usecases/variations.variations_text), so a click after a restart
still finds them; the custom_id carries the proposer (only they may approve) and the preset.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.discord import replies
from bot.discord.target import Target
from bot.usecases import variations


class GenerateAllButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:va:(?P<owner>\d+):(?P<preset>[\w.\-]{0,64})"
):
    """Generate all: queue each variation of the message for the user who asked for them."""

    def __init__(self, owner: int, preset: str = ""):
        self.owner, self.preset = owner, preset
        button = discord.ui.Button(
            label="Generate all", style=discord.ButtonStyle.success, custom_id=f"atelier:va:{owner}:{preset}"
        )
        super().__init__(button)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> GenerateAllButton:  # noqa: E501
        return cls(int(match["owner"]), match["preset"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner:
            await replies.fail(interaction, "⚠️ only the person who asked for these variations can approve them")
            return False
        return True

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self._generate(interaction))

    async def _generate(self, interaction: discord.Interaction) -> None:
        bot: Any = interaction.client
        await interaction.response.defer(thinking=True)
        prompts = variations.prompts_from_text(interaction.message.content if interaction.message else "")
        who = replies.requester(interaction)
        queued = await variations.generate_all(
            bot.services, who, prompts, self.preset or None, reply_to={"interaction_id": interaction.id}
        )
        if interaction.message is not None:  # approved once: the button goes away
            await interaction.message.edit(view=None)
        await interaction.followup.send(variations.queued_text(queued, len(prompts)))
        for i, job_id in enumerate(queued.job_ids, 1):
            target = Target(who.user_id, interaction.channel, label=f"Variation {i}")
            await bot.poster.track(job_id, target)


def variations_view(owner: int, preset: str | None) -> discord.ui.View:
    """The persistent Generate all button."""
    view = discord.ui.View(timeout=None)
    view.add_item(GenerateAllButton(owner, preset or ""))
    return view


VARIATION_ITEMS = (GenerateAllButton,)
