"""Interaction reply helpers: specific, ephemeral errors whether or not the interaction was deferred."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable

import discord
from discord import app_commands

from bot.usecases.errors import UserError
from bot.usecases.text import clip
from engine.jobs.policy import Requester
from tools.errors import USER_ERRORS

log = logging.getLogger(__name__)
SHOWN = (UserError, *USER_ERRORS)  # errors whose own text the user sees


def error_text(error: BaseException) -> str:
    """The message a user sees for an exception: its own text for user errors, a generic line otherwise."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, SHOWN):
        return f"⚠️ {clip(str(error), 1900)}"
    if isinstance(error, app_commands.MissingPermissions):
        return f"⚠️ you need the {', '.join(error.missing_permissions)} permission for this"
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"⚠️ slow down: try again in {error.retry_after:.0f} s"
    if isinstance(error, app_commands.TransformerError | app_commands.CheckFailure):
        return f"⚠️ {clip(str(error), 1900)}"
    log.error("unexpected error in a Discord interaction", exc_info=error)
    return "⚠️ something went wrong on our side; it has been logged"


async def fail(interaction: discord.Interaction, text: str) -> None:
    """Send `text` ephemerally, replacing a public 'thinking…' placeholder if the interaction was deferred."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as e:
        log.warning("could not report an error to the user: %s", e)


async def guarded(interaction: discord.Interaction, action: Awaitable[object]) -> None:
    """Run a component's work; every failure becomes a specific ephemeral message."""
    try:
        await action
    except Exception as e:  # noqa: BLE001 - never a silent "interaction failed"
        await fail(interaction, error_text(e))


async def say(interaction: discord.Interaction, text: str, *, ephemeral: bool = True) -> None:
    """Answer a (possibly deferred) interaction with text."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=ephemeral)
    else:
        await interaction.followup.send(text, ephemeral=ephemeral)


async def say_long(interaction: discord.Interaction, text: str, *, ephemeral: bool = True) -> None:
    """Answer with text of any length, split into 2000-char messages."""
    from bot.discord.render import split_text

    for part in split_text(text) or ["(nothing)"]:
        await say(interaction, part, ephemeral=ephemeral)


def is_admin(interaction: discord.Interaction) -> bool:
    """True when the user may manage the server (guild-wide presets and styles)."""
    return bool(interaction.guild_id) and interaction.permissions.manage_guild


def role_ids(member: object) -> tuple[int, ...]:
    """The member's role ids without @everyone (the guild's tool policy matches on these); () in DMs."""
    return tuple(r.id for r in getattr(member, "roles", [])[1:])


def requester(interaction: discord.Interaction) -> Requester:
    """Who asks through an interaction, as the job policy sees them."""
    user = interaction.user
    return Requester(user.id, interaction.guild_id or 0, interaction.channel_id or 0, role_ids(user))
