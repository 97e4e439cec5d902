"""Persistent result buttons (reroll, V1..Vn, U1..Un, favorite, info, delete, zoom/pan) and critique fixes.

Buttons are DynamicItems keyed by custom_id ("atelier:v:<job_id>:<i>"), registered in setup_hook, so a
click after a restart is routed by its custom_id alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

import discord

from bot.agent_text import explain_text
from bot.discord import bridge, pan, replies
from tools.prompts import shipped_prompts

ACTIONS = {"r": "generate", "v": "variation", "u": "upscale"}
MAX_FIXES = 5


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"atelier:(?P<action>[rvufid]):(?P<job>[0-9]+)(?::(?P<index>[0-9]+))?",
):
    """One button on a finished job's message; `index` is 1-based (V1 = image 1)."""

    def __init__(self, action: str, job_id: int, index: int | None = None, *, row: int | None = None):
        self.action, self.job_id, self.index = action, job_id, index
        cid = f"atelier:{action}:{job_id}" + (f":{index}" if index is not None else "")
        label, style, emoji = _look(action, index)
        super().__init__(discord.ui.Button(label=label, style=style, emoji=emoji, custom_id=cid, row=row))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> ResultButton:
        index = match["index"]
        return cls(match["action"], int(match["job"]), int(index) if index else None)

    async def callback(self, interaction: discord.Interaction) -> Any:
        try:
            await _dispatch(interaction, self.action, self.job_id, self.index)
        except Exception as e:  # noqa: BLE001 - every failure becomes a specific ephemeral message
            await replies.fail(interaction, replies.error_text(e))


class FixButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:fix:(?P<gen>[0-9]+):(?P<i>[0-9]+)"
):
    """Apply suggestion i of a critique (of generation `gen`, 0 = an uploaded image)."""

    def __init__(self, generation_id: int, index: int):
        self.generation_id, self.index = generation_id, index
        cid = f"atelier:fix:{generation_id}:{index}"
        super().__init__(
            discord.ui.Button(label=f"Fix {index}", style=discord.ButtonStyle.primary, custom_id=cid)
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> FixButton:
        return cls(int(match["gen"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        from bot.discord import conversation

        try:
            await conversation.apply_fix(interaction, self.generation_id, self.index)
        except Exception as e:  # noqa: BLE001
            await replies.fail(interaction, replies.error_text(e))


def _look(action: str, index: int | None) -> tuple[str | None, discord.ButtonStyle, str | None]:
    grey, blue, red = discord.ButtonStyle.secondary, discord.ButtonStyle.primary, discord.ButtonStyle.danger
    return {
        "r": (None, grey, "🔄"),
        "v": (f"V{index}", grey, None),
        "u": (f"U{index}", blue, None),
        "f": (None, grey, "⭐"),
        "i": (None, grey, "ℹ️"),
        "d": (None, red, "🗑️"),
    }[action]


def result_view(job_id: int, n_images: int, kind: str = "generate") -> discord.ui.View:
    """The persistent button grid for a finished job with n_images images."""
    view = discord.ui.View(timeout=None)
    if kind == "generate":
        view.add_item(ResultButton("r", job_id, row=0))
    for a in ("f", "i", "d"):
        view.add_item(ResultButton(a, job_id, row=0))
    if kind != "upscale":
        for i in range(1, min(n_images, 5) + 1):
            view.add_item(ResultButton("v", job_id, i, row=1))
    for i in range(1, min(n_images, 5) + 1):
        view.add_item(ResultButton("u", job_id, i, row=2))
    pan.add_items(view, job_id, n_images, kind)
    return view


def fix_view(generation_id: int | None, n_fixes: int) -> discord.ui.View | None:
    """Buttons for up to MAX_FIXES suggestions of a critique."""
    if n_fixes <= 0:
        return None
    view = discord.ui.View(timeout=None)
    for i in range(1, min(n_fixes, MAX_FIXES) + 1):
        view.add_item(FixButton(generation_id or 0, i))
    return view


def dynamic_items() -> tuple[type[discord.ui.DynamicItem], ...]:
    """Every DynamicItem class the bot must register at startup."""
    return ResultButton, FixButton, pan.OutpaintButton, pan.OutpaintSelect


async def _dispatch(interaction: discord.Interaction, action: str, job_id: int, index: int | None) -> None:
    bot: Any = interaction.client
    services = bot.services
    source = await bridge.jobs_of(services).get(job_id)
    if source is None:
        raise bridge.UserError(f"job #{job_id} no longer exists")
    if action in ACTIONS:
        await _follow_up(interaction, bot, source, ACTIONS[action], index)
    elif action == "i":
        turn = await bridge.store_of(services).turns.for_job(source.id, interaction.user.id)
        await replies.say(interaction, info_text(source, turn))
    elif action == "f":
        await _favorite(interaction, services, source)
    elif action == "d":
        await _delete(interaction, services, source)


async def _follow_up(
    interaction: discord.Interaction, bot: Any, source: Any, kind: str, index: int | None
) -> None:
    from bot.discord.progress import Target

    await interaction.response.defer(thinking=True)
    payload = bridge.followup_payload(kind, source, None if index is None else index - 1)
    job_id = await bridge.submit(
        bot.services,
        kind,
        payload,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id or 0,
        channel_id=interaction.channel_id or 0,
        reply_to={"message_id": interaction.message.id if interaction.message else None},
    )
    label = {"generate": "Reroll", "variation": "Variation", "upscale": "Upscale"}[kind]
    label += f" of #{source.id}" + (f" image {index}" if index else "")
    target = Target(interaction.user.id, interaction.channel, interaction=interaction, label=label)
    await bot.poster.track(job_id, target)


def info_text(job: Any, turn: Any = None) -> str:
    """Seed and parameters of a job, for the ℹ️ button; with the agent turn that queued it, why it did."""
    out = bridge.job_output(job)
    params = {k: v for k, v in job.payload.items() if k not in ("source_image", "mask", "reference_image")}
    if params.get("controls"):  # upload paths stay private; type and scale are what the user chose
        params["controls"] = [{k: v for k, v in c.items() if k != "image"} for c in params["controls"]]
    gen = f" · generation #{out.generation_id}" if out.generation_id is not None else ""
    seeds = ", ".join(map(str, out.seeds)) or "?"
    why = ("\n" + explain_text(shipped_prompts(), turn)[:600]) if turn is not None else ""
    body = json.dumps(params, indent=1)[: 1700 - len(why)]
    return f"Job #{job.id} ({job.kind}){gen} · seeds {seeds}\n```json\n{body}\n```{why}"


async def _favorite(interaction: discord.Interaction, services: Any, job: Any) -> None:
    gen = bridge.job_output(job).generation_id
    if gen is None:
        raise bridge.UserError("this result has no saved generation to favorite")
    if not await bridge.store_of(services).history.set_favorite(gen, interaction.user.id, True):
        raise bridge.UserError("only the person who made this image can favorite it")
    await replies.say(interaction, f"⭐ Saved generation #{gen} to your favorites.")


async def _delete(interaction: discord.Interaction, services: Any, job: Any) -> None:
    if interaction.user.id != job.user_id:
        raise bridge.UserError("only the person who made this image can delete it")
    await interaction.response.defer()
    gen = bridge.job_output(job).generation_id
    if gen is not None:
        await bridge.store_of(services).history.delete(gen, interaction.user.id)
    if interaction.message is not None:
        await interaction.message.delete()
