"""Persistent result buttons: reroll, V1..Vn, U1..Un, favorite, info and delete (zoom/pan live in pan.py).

One DynamicItem per behaviour, keyed by custom_id ("atelier:v:<job_id>:<i>") and registered in setup_hook, so
a click after a restart is routed by its custom_id alone. Who may click is decided in interaction_check.
"""

from __future__ import annotations

import json
from typing import Any

import discord

from bot.agent_text import explain_text
from bot.discord import pan, replies
from bot.discord.items import BLUE, RED, JobButton, on_message, source_job, submit_tracked
from bot.usecases.errors import UserError
from bot.usecases.jobs import followup_payload, job_output
from bot.usecases.quality import result_notes
from engine.jobs.result import JobResult
from engine.store.jobs import Job
from tools.prompts import shipped_prompts

LABELS = {"generate": "Reroll", "variation": "Variation", "upscale": "Upscale"}


async def follow_up(interaction: discord.Interaction, job_id: int, kind: str, index: int | None) -> None:
    """Queue a reroll / variation / upscale of a finished job for the clicking user; track it in place."""
    await interaction.response.defer(thinking=True)
    source = await source_job(interaction, job_id)
    payload = followup_payload(kind, source, None if index is None else index - 1)
    label = f"{LABELS[kind]} of #{source.id}" + (f" image {index}" if index else "")
    await submit_tracked(interaction, kind, payload, label=label, reply_to=on_message(interaction))


class RerollButton(JobButton, tag="r"):
    """🔄 the same request again with a new seed (anyone may reroll; the new job is theirs)."""

    emoji = "🔄"

    async def act(self, interaction: discord.Interaction) -> None:
        await follow_up(interaction, self.job_id, "generate", None)


class VariationButton(JobButton, tag="v", image=True):
    """V<i>: a variation of image i (1-based)."""

    letter = "V"

    async def act(self, interaction: discord.Interaction) -> None:
        await follow_up(interaction, self.job_id, "variation", self.index)


class UpscaleButton(JobButton, tag="u", image=True):
    """U<i>: upscale image i (1-based)."""

    letter, style = "U", BLUE

    async def act(self, interaction: discord.Interaction) -> None:
        await follow_up(interaction, self.job_id, "upscale", self.index)


class FavoriteButton(JobButton, tag="f"):
    """⭐ save the generation to its maker's favorites (maker only)."""

    emoji, maker_only = "⭐", "favorite"

    async def act(self, interaction: discord.Interaction) -> None:
        gen = job_output(await source_job(interaction, self.job_id)).generation_id
        history = interaction.client.services.store.history  # type: ignore[attr-defined]
        if not await history.set_favorite(gen, interaction.user.id, True):
            raise UserError(f"generation #{gen} is no longer in your history")
        await replies.say(interaction, f"⭐ Saved generation #{gen} to your favorites.")


class InfoButton(JobButton, tag="i"):
    """ℹ️ seeds and parameters, and why the agent made it (ephemeral; anyone may look)."""

    emoji = "ℹ️"

    async def act(self, interaction: discord.Interaction) -> None:
        source = await source_job(interaction, self.job_id)
        turns = interaction.client.services.store.turns  # type: ignore[attr-defined]
        await replies.say(interaction, info_text(source, await turns.for_job(source.id, interaction.user.id)))


class DeleteButton(JobButton, tag="d"):
    """🗑️ delete the message and the generation (maker only)."""

    emoji, style, maker_only = "🗑️", RED, "delete"

    async def act(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        result = JobResult.of(await source_job(interaction, self.job_id))
        if result is not None:
            history = interaction.client.services.store.history  # type: ignore[attr-defined]
            await history.delete(result.generation_id, interaction.user.id)
        if interaction.message is not None:
            await interaction.message.delete()


def result_view(job_id: int, n_images: int, kind: str = "generate") -> discord.ui.View:
    """The persistent button grid for a finished job with n_images images."""
    view = discord.ui.View(timeout=None)
    if kind == "generate":
        view.add_item(RerollButton(job_id, row=0))
    for item in (FavoriteButton, InfoButton, DeleteButton):
        view.add_item(item(job_id, row=0))
    if kind == "animate":  # a clip: no per-image variation, upscale or pan
        return view
    shown = range(1, min(n_images, 5) + 1)
    if kind != "upscale":
        for i in shown:
            view.add_item(VariationButton(job_id, i, row=1))
    for i in shown:
        view.add_item(UpscaleButton(job_id, i, row=2))
    pan.add_items(view, job_id, n_images, kind)
    return view


RESULT_ITEMS = (RerollButton, VariationButton, UpscaleButton, FavoriteButton, InfoButton, DeleteButton)


def info_text(job: Job, turn: Any = None) -> str:
    """Seed and parameters of a job, for the ℹ️ button; with the agent turn that queued it, why it did."""
    out = JobResult.of(job)
    params = {k: v for k, v in job.payload.items() if k not in ("source_image", "mask", "reference_image")}
    if params.get("controls"):  # upload paths stay private; type and scale are what the user chose
        params["controls"] = [{k: v for k, v in c.items() if k != "image"} for c in params["controls"]]
    gen = f" · generation #{out.generation_id}" if out is not None else ""
    seeds = ", ".join(map(str, out.seeds)) if out is not None and out.seeds else "?"
    why = ("\n" + explain_text(shipped_prompts(), turn)[:600]) if turn is not None else ""
    notes = f"\n{result_notes(out.params)}" if out is not None and result_notes(out.params) else ""
    body = json.dumps(params, indent=1)[: 1700 - len(why) - len(notes)]
    return f"Job #{job.id} ({job.kind}){gen} · seeds {seeds}{notes}\n```json\n{body}\n```{why}"
