"""What the persistent buttons and the commands share: the button look, the job acted on, submitting in place.

JobButton is the base of the buttons keyed by a job ("atelier:<tag>:<job>", plus ":<index>" for one image,
1-based): the custom_id carries everything, so a click after a restart is routed by it alone.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

import discord

from bot.discord import replies
from bot.discord.target import Target
from bot.usecases.errors import UserError
from engine.store.jobs import Job

GREY, BLUE, RED = discord.ButtonStyle.secondary, discord.ButtonStyle.primary, discord.ButtonStyle.danger
GREEN = discord.ButtonStyle.success


def button(custom_id: str, *, label: str | None = None, emoji: str | None = None,
           style: discord.ButtonStyle = GREY, row: int | None = None) -> discord.ui.Button:  # fmt: skip
    """A persistent button with this custom_id and look."""
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row)


async def source_job(interaction: discord.Interaction, job_id: int) -> Job:
    """The job a button acts on; a specific error once it is gone."""
    source = await interaction.client.services.jobs.get(job_id)  # type: ignore[attr-defined]
    if source is None:
        raise UserError(f"job #{job_id} no longer exists")
    return source


def on_message(interaction: discord.Interaction) -> dict:
    """The reply_to of a job queued from a button: the message the button is on."""
    return {"message_id": interaction.message.id if interaction.message else None}


async def submit_tracked(
    interaction: discord.Interaction, kind: str, payload: dict, *, label: str = "", reply_to: dict | None = None
) -> int:
    """Queue a job for the interaction's user and track it in the (deferred) response; its id."""
    bot: Any = interaction.client
    who = replies.requester(interaction)
    job_id = await bot.services.submit(
        kind, payload, user_id=who.user_id, guild_id=who.guild_id, channel_id=who.channel_id, roles=who.roles,
        reply_to=reply_to or {"interaction_id": interaction.id},
    )  # fmt: skip
    target = Target(who.user_id, interaction.channel, interaction=interaction, label=label)
    await bot.poster.track(job_id, target)
    return job_id


async def _maker_only(interaction: discord.Interaction, job_id: int, what: str) -> bool:
    """interaction_check for buttons only the image's maker may use: others get an ephemeral refusal."""
    try:
        source = await source_job(interaction, job_id)
    except UserError as e:
        await replies.fail(interaction, replies.error_text(e))
        return False
    if source.user_id == interaction.user.id:
        return True
    refusal = UserError(f"only the person who made this image can {what} it")
    await replies.fail(interaction, replies.error_text(refusal))
    return False


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:job:(?P<job>[0-9]+)"):
    """A button on a job's result; subclasses give the tag (and image=True), the look and `act`."""

    tag: ClassVar[str] = "job"
    letter: ClassVar[str] = ""  # a label "<letter><index>" (V1, U2); none without it
    emoji: ClassVar[str | None] = None
    style: ClassVar[discord.ButtonStyle] = GREY
    maker_only: ClassVar[str] = ""  # "favorite": only the image's maker may (the refusal names the action)

    def __init_subclass__(cls, *, tag: str, image: bool = False) -> None:
        cls.tag = tag
        key = rf"atelier:{tag}:(?P<job>[0-9]+)" + (r":(?P<index>[0-9]+)" if image else "")
        super().__init_subclass__(template=key)

    def __init__(self, job_id: int, index: int = 0, *, row: int | None = None):
        self.job_id, self.index = job_id, index
        custom_id = f"atelier:{self.tag}:{job_id}" + (f":{index}" if index else "")
        super().__init__(button(custom_id, label=self.label(), emoji=self.emoji, style=self.style, row=row))

    def label(self) -> str | None:
        """The button's text (None: the emoji alone)."""
        return f"{self.letter}{self.index}" if self.letter else None

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> Self:  # noqa: E501
        return cls(*map(int, match.groups()))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return not self.maker_only or await _maker_only(interaction, self.job_id, self.maker_only)

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, self.act(interaction))

    async def act(self, interaction: discord.Interaction) -> None:
        """What a click does (errors become an ephemeral message)."""
        raise NotImplementedError
