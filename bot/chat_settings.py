"""Terminal /settings: show or change the user's saved defaults, like Discord's /settings (and the memory limits)."""

from __future__ import annotations

import shlex
from typing import Protocol

from bot.usecases import account
from bot.usecases.errors import UserError
from engine.core import Engine

COMMANDS = ("settings",)
HELP = """  /settings [KEY VALUE ...] [clear]  show or change your defaults: preset, style, aspect, negative,
                       count, cache on|off (reuse results of identical seeded requests), draft on|off"""
BOOLEAN_KEYS = ("cache", "draft")
ON, OFF = ("on", "yes", "true", "1"), ("off", "no", "false", "0")


class Chat(Protocol):
    engine: Engine
    user_id: int


def _value(key: str, raw: str) -> str | int | bool:
    """A setting's typed value from its text: on/off for cache and draft, a whole number for count."""
    if key in BOOLEAN_KEYS:
        if raw.lower() not in ON + OFF:
            raise UserError(f"{key} takes on or off, not '{raw}'")
        return raw.lower() in ON
    if key == "count":
        if not raw.isdigit():
            raise UserError(f"count must be a whole number, not '{raw}'")
        return int(raw)
    return raw


def parse_settings(arg: str) -> tuple[bool, dict[str, str | int | bool]]:
    """(clear, values) from '/settings [clear] [KEY VALUE | KEY=VALUE | --KEY VALUE] ...'."""
    try:
        words = shlex.split(arg)
    except ValueError as e:
        raise UserError(f"cannot read that /settings line: {e}") from None
    clear, values = False, dict[str, str | int | bool]()
    i = 0
    while i < len(words):
        key, eq, raw = words[i].removeprefix("--").partition("=")
        key = key.lower()
        if key == "clear" and not eq:
            clear, i = True, i + 1
            continue
        if key not in account.USER_SETTING_KEYS:
            raise UserError(f"unknown setting '{key}'; use {', '.join(account.USER_SETTING_KEYS)} or clear")
        if not eq:
            if i + 1 >= len(words):
                example = "off" if key in BOOLEAN_KEYS else "…"
                raise UserError(f"{key} needs a value, e.g. /settings {key} {example}")
            raw, i = words[i + 1], i + 1
        values[key] = _value(key, raw)
        i += 1
    return clear, values


async def run(chat: Chat, name: str, arg: str) -> str:
    """Change the given settings (none: only show them) and show every saved default with the memory limits."""
    clear, values = parse_settings(arg)
    return await account.settings_update(chat.engine, chat.user_id, 0, clear, **values)
