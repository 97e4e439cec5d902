"""Terminal commands of issue 16's evaluation part: /compare (grids across presets, schedulers or seeds)."""

from __future__ import annotations

import shlex
from typing import Protocol

from bot.usecases import compare
from bot.usecases.errors import UserError
from engine.core import Engine

COMMANDS = ("compare",)
HELP = "  /compare PROMPT --presets a,b | --schedulers x,y | --seeds 1,2 [--seed N] [--preset P]   a labelled grid"


class Chat(Protocol):
    engine: Engine
    user_id: int


def parse_compare(arg: str) -> tuple[str, str, str, int | None, str | None]:
    """(prompt, axis, values, seed, preset) of '/compare PROMPT --AXIS v1,v2 [--seed N] [--preset P]'."""
    try:
        words = shlex.split(arg)
    except ValueError as e:
        raise UserError(f"cannot read that /compare line: {e}") from None
    prompt, axis, raw, seed, preset = [], "", "", None, None
    it = iter(words)
    for w in it:
        if w.startswith("--"):
            value = next(it, None)
            if value is None:
                raise UserError(f"{w} needs a value")
            if w == "--seed":
                if not value.isdigit():
                    raise UserError(f"--seed must be a whole number, got {value!r}")
                seed = int(value)
            elif w == "--preset":
                preset = value
            elif w[2:] in compare.AXES and not axis:
                axis, raw = w[2:], value
            else:
                raise UserError(f"unknown or repeated option {w}; use one of --presets, --schedulers, --seeds")
        else:
            prompt.append(w)
    if not axis:
        raise UserError("say what to compare: --presets a,b or --schedulers x,y or --seeds 1,2")
    return " ".join(prompt), axis, raw, seed, preset


async def run(chat: Chat, name: str, arg: str) -> str:
    """Run one of COMMANDS for the terminal user."""
    prompt, axis, raw, seed, preset = parse_compare(arg)
    cmp = await compare.submit_compare(
        chat.engine, user_id=chat.user_id, guild_id=0, prompt=prompt, axis=axis, raw=raw, seed=seed, preset=preset
    )
    await compare.finish_compare(chat.engine, cmp)
    lines = [cmp.text(), f"grid: {cmp.grid}" if cmp.grid else "no grid: every tile failed"]
    lines += [f"  {t.label}: {t.image}" for t in cmp.tiles if t.image]
    return "\n".join(lines)
