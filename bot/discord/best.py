"""Best-of-N results: the best image by CLIP score is posted; the others are one click away (🖼️ Others)."""

from __future__ import annotations

import asyncio
import io

import discord

from bot.discord.items import JobButton
from bot.discord.render import fit_upload
from bot.usecases.errors import UserError
from engine.jobs.result import JobResult

SHOWN = 1  # images posted with a best-of result; the rest come with the button


def is_best_of(out: JobResult) -> bool:
    """Whether a result was a best-of-N pick with images held back."""
    return bool(out.params.get("best_of")) and len(out.images) > SHOWN


def _load(paths: list[str], limit: int) -> list[discord.File]:
    files = []
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            data, name = fit_upload(f.read(), limit, f"other-{i + 2}.png")
        files.append(discord.File(io.BytesIO(data), filename=name))
    return files


class OthersButton(JobButton, tag="b"):
    """🖼️ the other images of a best-of-N result, with their CLIP scores (ephemeral; anyone may look)."""

    emoji = "🖼️"

    def __init__(self, job_id: int, n_others: int = 0, *, row: int | None = None):
        self.n_others = n_others  # shown on the label only (not in the custom_id)
        super().__init__(job_id, row=row)

    def label(self) -> str:
        """'Others (n)' when the count is known."""
        return f"Others ({self.n_others})" if self.n_others else "Others"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        services = interaction.client.services  # type: ignore[attr-defined]
        job = await services.jobs.get(self.job_id)
        out = JobResult.of(job) if job is not None else None
        if out is None:
            raise UserError(f"job #{self.job_id} has no images to show")
        others = out.images[SHOWN:]
        scores = out.params.get("clip_scores") or []
        ranked = ", ".join(f"#{i + 1}: {s:.1f}" for i, s in enumerate(scores)) if scores else "no scores"
        limit = services.settings.images.upload_limit_bytes
        files = await asyncio.to_thread(_load, others, limit)
        text = f"The other {len(others)} image(s) of job #{self.job_id} (CLIP {ranked})"
        await interaction.followup.send(text, files=files, ephemeral=True)


def add_others(view: discord.ui.View, job_id: int, out: JobResult) -> None:
    """Add the 🖼️ Others button to a best-of result's buttons (row 0 has room for it)."""
    if is_best_of(out):
        view.add_item(OthersButton(job_id, len(out.images) - SHOWN, row=0))
