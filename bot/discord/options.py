"""The slash-command option types several commands share, each bounded (and autocompleted) in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import discord
from discord import app_commands

from bot.discord import complete
from engine.runtime.control import CONTROL_TYPES, REFERENCE_MODES
from engine.runtime.diffusion.request import ASPECTS, MAX_SEED, PROMPT_MAX_CHARS

Suggest = Callable[[discord.Interaction, str], Awaitable[list[app_commands.Choice[str]]]]


class _Text(app_commands.Transformer):
    """A string option passed on as typed."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.string

    async def transform(self, interaction: discord.Interaction, value: str) -> str:
        return value


class OneOf(_Text):
    """One of a fixed set of names, offered as the option's choices."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = tuple(names)

    @property
    def choices(self) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=n, value=n) for n in self.names]


class Listed(_Text):
    """A name of 1 to max_length characters, typed with suggestions from `suggest` (any text is passed on)."""

    def __init__(self, suggest: Suggest, max_length: int):
        super().__init__()
        self.suggest, self.max_length = suggest, max_length

    @property
    def min_value(self) -> int:
        return 1

    @property
    def max_value(self) -> int:
        return self.max_length

    async def autocomplete(self, interaction: discord.Interaction, value: str) -> list[app_commands.Choice[str]]:
        return await self.suggest(interaction, value)


Prompt = app_commands.Range[str, 1, PROMPT_MAX_CHARS]
Seed = app_commands.Range[int, 0, MAX_SEED]
Name = app_commands.Range[str, 1, 64]  # a new preset or style name
Preset = app_commands.Transform[str, Listed(complete.presets, 64)]
Style = app_commands.Transform[str, Listed(complete.styles, 64)]
Code = app_commands.Transform[str, Listed(complete.codes, 16)]  # a style code (X7K2)
Aspect = app_commands.Transform[str, OneOf(ASPECTS)]
ControlType = app_commands.Transform[str, OneOf(CONTROL_TYPES)]
ReferenceMode = app_commands.Transform[str, OneOf(REFERENCE_MODES)]
