"""Persistent zoom-out / pan controls on results: outpaint one image into a new 'generate' job.

One image: a row of five buttons (Zoom out, ⬅, ➡, ⬆, ⬇). Several images: one select menu on that row with
those five actions for every image (at most 4 x 5 = 20 options), so the message stays within Discord's five
rows of components. Both are DynamicItems keyed by custom_id, so clicks after a restart still work.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.discord import replies
from bot.discord.items import button, on_message, source_job, submit_tracked
from bot.usecases import guided

ROW = 3  # rows 0-2 hold reroll/favorite/info/delete, V1..Vn and U1..Un
DIRECTIONS = ("all", "left", "right", "up", "down")
EMOJI = {"all": "🔍", "left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
WORDS = {"all": "Zoom out", "left": "Pan left", "right": "Pan right", "up": "Pan up", "down": "Pan down"}
_DIR = "|".join(DIRECTIONS)


class OutpaintButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=rf"atelier:o:(?P<job>[0-9]+):(?P<dir>{_DIR}):(?P<index>[0-9]+)",
):
    """Zoom out (direction 'all') or pan one image of a job; `index` is 1-based."""

    def __init__(self, job_id: int, direction: str, index: int = 1, *, row: int | None = None):
        self.job_id, self.direction, self.index = job_id, direction, index
        label = WORDS[direction] if direction == "all" else None
        cid = f"atelier:o:{job_id}:{direction}:{index}"
        super().__init__(button(cid, label=label, emoji=EMOJI[direction], row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> OutpaintButton:  # noqa: E501
        return cls(int(match["job"]), match["dir"], int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await _run(interaction, self.job_id, self.direction, self.index)


class OutpaintSelect(discord.ui.DynamicItem[discord.ui.Select], template=r"atelier:os:(?P<job>[0-9]+)"):
    """One menu with zoom out / pan for each image of a multi-image result; values are '<direction>:<i>'."""

    def __init__(self, job_id: int, n_images: int = 0, *, row: int | None = None):
        self.job_id = job_id
        select: discord.ui.Select = discord.ui.Select(
            custom_id=f"atelier:os:{job_id}", placeholder="🔍 Zoom out or pan an image…", options=_choices(n_images), row=row,
        )  # fmt: skip
        super().__init__(select)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select, match: re.Match[str], /) -> OutpaintSelect:  # noqa: E501
        return cls(int(match["job"]), len(item.options) // len(DIRECTIONS))

    async def callback(self, interaction: discord.Interaction) -> Any:
        value = self.item.values[0] if self.item.values else ""
        direction, _, index = value.partition(":")
        if direction not in DIRECTIONS or not index.isdigit():
            await replies.fail(interaction, f"⚠️ unknown zoom/pan choice {value!r}")
            return
        await _run(interaction, self.job_id, direction, int(index))


def _choices(n_images: int) -> list[discord.SelectOption]:
    """The menu's options: each direction for each image ('<direction>:<i>'); a placeholder one for none."""
    options = [
        discord.SelectOption(label=f"{WORDS[d]} · image {i}", value=f"{d}:{i}", emoji=EMOJI[d])
        for i in range(1, n_images + 1)
        for d in DIRECTIONS
    ]
    return options or [discord.SelectOption(label="image 1", value="all:1")]


def add_items(view: discord.ui.View, job_id: int, n_images: int, kind: str) -> None:
    """Add the zoom/pan row to a result view (generations and variations with at least one image)."""
    if kind not in guided.OUTPAINT_KINDS or n_images <= 0:
        return
    if n_images == 1:
        for d in DIRECTIONS:
            view.add_item(OutpaintButton(job_id, d, 1, row=ROW))
    else:
        view.add_item(OutpaintSelect(job_id, min(n_images, 5), row=ROW))


async def _run(interaction: discord.Interaction, job_id: int, direction: str, index: int) -> None:
    await replies.guarded(interaction, _enqueue(interaction, job_id, direction, index))


async def _enqueue(interaction: discord.Interaction, job_id: int, direction: str, index: int) -> None:
    """Defer, then queue the outpaint job for the clicking user and track it in the deferred message."""
    await interaction.response.defer(thinking=True)
    source = await source_job(interaction, job_id)
    payload = guided.outpaint_payload(source, index - 1, direction)
    label = f"{WORDS[direction]} of #{source.id} image {index}"
    await submit_tracked(interaction, "generate", payload, label=label, reply_to=on_message(interaction))
