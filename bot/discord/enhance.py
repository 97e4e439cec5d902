"""✨ E<i> on a draft result: re-render image i at full quality with the same prompt and seed (img2img from it)."""

from __future__ import annotations

import discord

from bot.discord.items import GREEN, JobButton, on_message, source_job, submit_tracked
from bot.usecases.creation import enhance_payload, is_draft
from engine.jobs.result import JobResult

ROW = 4  # rows 0-3 hold the other result buttons and the zoom/pan row


class EnhanceButton(JobButton, tag="e", image=True):
    """E<i>: enhance draft image i (1-based); anyone may click, the new job is theirs."""

    letter, style = "✨ E", GREEN

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        source = await source_job(interaction, self.job_id)
        services = interaction.client.services  # type: ignore[attr-defined]
        payload = await enhance_payload(services, source, self.index - 1, interaction.user.id, interaction.guild_id or 0)
        label = f"Enhance of #{source.id} image {self.index}"
        await submit_tracked(interaction, "generate", payload, label=label, reply_to=on_message(interaction))


def add_enhance(view: discord.ui.View, job_id: int, out: JobResult | None) -> None:
    """Add E1..En to a draft result's buttons (nothing for other results)."""
    if not is_draft(out):
        return
    for i in range(1, min(len(out.images), 5) + 1):  # type: ignore[union-attr]
        view.add_item(EnhanceButton(job_id, i, row=ROW))


ENHANCE_ITEMS = (EnhanceButton,)
