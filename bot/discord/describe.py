"""The /describe result's buttons: one per suggested prompt, each queues that prompt as a generation.

The prompts live in the message itself (bot/usecases/describe.describe_text), so a click after a restart still
finds its prompt; the custom_id carries the suggestion's number and the preset it was styled for.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.discord import replies
from bot.discord.items import submit_tracked
from bot.usecases import account
from bot.usecases.describe import Described, prompt_from_text


class DescribeButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:ds:(?P<index>[1-9]):(?P<preset>[\w.\-]{0,64})"
):
    """🎨<i>: generate suggestion i with the preset it was written for (anyone may; the new job is theirs)."""

    def __init__(self, index: int, preset: str, *, row: int | None = None):
        self.index, self.preset = index, preset
        button = discord.ui.Button(
            label=f"Generate {index}", style=discord.ButtonStyle.primary, custom_id=f"atelier:ds:{index}:{preset}",
            row=row,
        )  # fmt: skip
        super().__init__(button)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> DescribeButton:  # noqa: E501
        return cls(int(match["index"]), match["preset"])

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self._generate(interaction))

    async def _generate(self, interaction: discord.Interaction) -> None:
        bot: Any = interaction.client
        await interaction.response.defer(thinking=True)
        text = interaction.message.content if interaction.message is not None else ""
        prompt = prompt_from_text(text or "", self.index)
        uid, gid = interaction.user.id, interaction.guild_id or 0
        payload = await account.imagine_payload(
            bot.services, user_id=uid, guild_id=gid, prompt=prompt, preset=self.preset or None
        )
        await submit_tracked(interaction, "generate", payload, label=f"Suggestion {self.index}")


def describe_view(d: Described) -> discord.ui.View:
    """One persistent Generate button per suggestion."""
    view = discord.ui.View(timeout=None)
    for i in range(1, len(d.prompts) + 1):
        view.add_item(DescribeButton(i, d.preset, row=0))
    return view


DESCRIBE_ITEMS = (DescribeButton,)
