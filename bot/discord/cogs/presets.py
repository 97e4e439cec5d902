"""/preset list|show|use|save|delete — per user, and per server for admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord import complete, replies
from bot.discord.cogs import BotCog
from bot.discord.options import Aspect, Name, Preset
from bot.usecases import library

Scope = Literal["user", "guild"]


class Presets(BotCog, commands.GroupCog, group_name="preset", group_description="image presets"):
    def _ids(self, i: discord.Interaction) -> dict:
        return {"user_id": i.user.id, "guild_id": i.guild_id or 0}

    async def _change(
        self,
        interaction: discord.Interaction,
        change: Callable[..., Awaitable[str]],
        *args: object,
        **kw: object,
    ) -> None:
        """Defer, run a preset change as the caller (with their admin right) and say its answer."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await change(
            self.bot.services, *args, is_admin=replies.is_admin(interaction), **kw, **self._ids(interaction)
        )
        await replies.say(interaction, text)

    @app_commands.command(name="list", description="presets you can use")
    async def list_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await replies.say_long(
            interaction, await library.preset_list(self.bot.services, **self._ids(interaction))
        )

    @app_commands.command(name="show", description="a preset's settings")
    async def show(self, interaction: discord.Interaction, name: Preset) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await library.preset_show(self.bot.services, name, **self._ids(interaction))
        await replies.say_long(interaction, text)

    @app_commands.command(name="use", description="make a preset your (or the server's) default")
    async def use(
        self, interaction: discord.Interaction, name: Preset, scope: Scope = "user"
    ) -> None:
        await self._change(interaction, library.preset_use, name, scope)

    @app_commands.command(name="save", description="save a preset based on another one")
    @app_commands.autocomplete(style=complete.styles)
    async def save(
        self,
        interaction: discord.Interaction,
        name: Name,
        base: Preset,
        scope: Scope = "user",
        steps: app_commands.Range[int, 1, 200] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        aspect: Aspect | None = None,
        negative: app_commands.Range[str, 0, 1000] | None = None,
        style: app_commands.Range[str, 0, 64] | None = None,
    ) -> None:
        await self._change(
            interaction, library.preset_save, name, base=base, scope=scope,
            steps=steps, cfg=cfg, aspect=aspect, negative=negative, style=style,
        )  # fmt: skip

    @app_commands.command(name="delete", description="delete one of your (or the server's) presets")
    async def delete(
        self, interaction: discord.Interaction, name: Preset, scope: Scope = "user"
    ) -> None:
        await self._change(interaction, library.preset_delete, name, scope)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Presets(bot))
