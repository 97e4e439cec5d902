"""Autocomplete for preset and style names and style codes."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.usecases import library, style_codes


def _choices(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    cur = current.strip().lower()
    ranked = sorted((n for n in names if cur in n), key=lambda n: (not n.startswith(cur), n))
    return [app_commands.Choice(name=n, value=n) for n in ranked[:25]]


async def presets(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Image preset names visible to the user that contain what was typed."""
    bot: Any = interaction.client
    names = await library.preset_names(bot.services, interaction.user.id, interaction.guild_id or 0)
    return _choices(names, current)


async def styles(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Style labels visible in the guild that contain what was typed."""
    bot: Any = interaction.client
    return _choices(await library.style_names(bot.services, interaction.guild_id or 0), current)


async def codes(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Style codes the user can use here (their own and the server's) matching what was typed."""
    bot: Any = interaction.client
    pairs = await style_codes.choices(bot.services, interaction.user.id, interaction.guild_id or 0, current)
    return [app_commands.Choice(name=label, value=code) for label, code in pairs]
