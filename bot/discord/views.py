"""Persistent result buttons: reroll, V1..Vn, U1..Un, favorite, info and delete (zoom/pan live in pan.py).

One DynamicItem per behaviour, keyed by custom_id ("atelier:v:<job_id>:<i>") and registered in setup_hook, so
a click after a restart is routed by its custom_id alone. Who may click is decided in interaction_check.
"""

from __future__ import annotations

import json
import re
from typing import Any

import discord

from bot.agent_text import explain_text
from bot.discord import pan, replies
from bot.discord.target import Target
from bot.usecases.errors import UserError
from bot.usecases.jobs import followup_payload, job_output
from bot.usecases.quality import result_notes
from engine.jobs.result import JobResult
from engine.store.jobs import Job
from tools.prompts import shipped_prompts

GREY, BLUE, RED = discord.ButtonStyle.secondary, discord.ButtonStyle.primary, discord.ButtonStyle.danger
LABELS = {"generate": "Reroll", "variation": "Variation", "upscale": "Upscale"}


def _button(custom_id: str, *, label: str | None = None, emoji: str | None = None,
            style: discord.ButtonStyle = GREY, row: int | None = None) -> discord.ui.Button:  # fmt: skip
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row)


async def _source(interaction: discord.Interaction, job_id: int) -> Job:
    source = await interaction.client.services.jobs.get(job_id)  # type: ignore[attr-defined]
    if source is None:
        raise UserError(f"job #{job_id} no longer exists")
    return source


async def _owner_only(interaction: discord.Interaction, job_id: int, what: str) -> bool:
    """interaction_check for buttons only the image's maker may use: others get an ephemeral refusal."""
    try:
        source = await _source(interaction, job_id)
    except UserError as e:
        await replies.fail(interaction, replies.error_text(e))
        return False
    if source.user_id == interaction.user.id:
        return True
    await replies.fail(interaction, replies.error_text(UserError(f"only the person who made this image can {what} it")))
    return False


async def follow_up(interaction: discord.Interaction, job_id: int, kind: str, index: int | None) -> None:
    """Queue a reroll / variation / upscale of a finished job for the clicking user; track it in place."""
    bot: Any = interaction.client
    await interaction.response.defer(thinking=True)
    source = await _source(interaction, job_id)
    payload = followup_payload(kind, source, None if index is None else index - 1)
    new_id = await bot.services.submit(
        kind, payload, user_id=interaction.user.id, guild_id=interaction.guild_id or 0,
        channel_id=interaction.channel_id or 0, roles=replies.role_ids(interaction.user),
        reply_to={"message_id": interaction.message.id if interaction.message else None},
    )  # fmt: skip
    label = f"{LABELS[kind]} of #{source.id}" + (f" image {index}" if index else "")
    await bot.poster.track(new_id, Target(interaction.user.id, interaction.channel, interaction=interaction, label=label))


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:r:(?P<job>[0-9]+)"):
    """🔄 the same request again with a new seed (anyone may reroll; the new job is theirs)."""

    def __init__(self, job_id: int, *, row: int | None = None):
        self.job_id = job_id
        super().__init__(_button(f"atelier:r:{job_id}", emoji="🔄", row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> RerollButton:  # noqa: E501
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, follow_up(interaction, self.job_id, "generate", None))


class VariationButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:v:(?P<job>[0-9]+):(?P<index>[0-9]+)"):  # noqa: E501
    """V<i>: a variation of image i (1-based)."""

    def __init__(self, job_id: int, index: int, *, row: int | None = None):
        self.job_id, self.index = job_id, index
        super().__init__(_button(f"atelier:v:{job_id}:{index}", label=f"V{index}", row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> VariationButton:  # noqa: E501
        return cls(int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, follow_up(interaction, self.job_id, "variation", self.index))


class UpscaleButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:u:(?P<job>[0-9]+):(?P<index>[0-9]+)"):  # noqa: E501
    """U<i>: upscale image i (1-based)."""

    def __init__(self, job_id: int, index: int, *, row: int | None = None):
        self.job_id, self.index = job_id, index
        super().__init__(_button(f"atelier:u:{job_id}:{index}", label=f"U{index}", style=BLUE, row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> UpscaleButton:  # noqa: E501
        return cls(int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, follow_up(interaction, self.job_id, "upscale", self.index))


class FavoriteButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:f:(?P<job>[0-9]+)"):
    """⭐ save the generation to its maker's favorites (maker only)."""

    def __init__(self, job_id: int, *, row: int | None = None):
        self.job_id = job_id
        super().__init__(_button(f"atelier:f:{job_id}", emoji="⭐", row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> FavoriteButton:  # noqa: E501
        return cls(int(match["job"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await _owner_only(interaction, self.job_id, "favorite")

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self._favorite(interaction))

    async def _favorite(self, interaction: discord.Interaction) -> None:
        gen = job_output(await _source(interaction, self.job_id)).generation_id
        history = interaction.client.services.store.history  # type: ignore[attr-defined]
        if not await history.set_favorite(gen, interaction.user.id, True):
            raise UserError(f"generation #{gen} is no longer in your history")
        await replies.say(interaction, f"⭐ Saved generation #{gen} to your favorites.")


class InfoButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:i:(?P<job>[0-9]+)"):
    """ℹ️ seeds and parameters, and why the agent made it (ephemeral; anyone may look)."""

    def __init__(self, job_id: int, *, row: int | None = None):
        self.job_id = job_id
        super().__init__(_button(f"atelier:i:{job_id}", emoji="ℹ️", row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> InfoButton:  # noqa: E501
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self._info(interaction))

    async def _info(self, interaction: discord.Interaction) -> None:
        source = await _source(interaction, self.job_id)
        turns = interaction.client.services.store.turns  # type: ignore[attr-defined]
        await replies.say(interaction, info_text(source, await turns.for_job(source.id, interaction.user.id)))


class DeleteButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:d:(?P<job>[0-9]+)"):
    """🗑️ delete the message and the generation (maker only)."""

    def __init__(self, job_id: int, *, row: int | None = None):
        self.job_id = job_id
        super().__init__(_button(f"atelier:d:{job_id}", emoji="🗑️", style=RED, row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> DeleteButton:  # noqa: E501
        return cls(int(match["job"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await _owner_only(interaction, self.job_id, "delete")

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self._delete(interaction))

    async def _delete(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        result = JobResult.of(await _source(interaction, self.job_id))
        if result is not None:
            await interaction.client.services.store.history.delete(result.generation_id, interaction.user.id)  # type: ignore[attr-defined]  # noqa: E501
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
