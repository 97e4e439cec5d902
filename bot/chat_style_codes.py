"""Terminal /stylecode: create, show, revoke and list style codes (as /stylecode does in Discord)."""

from __future__ import annotations

from typing import Protocol

from bot.usecases import style_codes
from bot.usecases.errors import UserError
from engine.core import Engine

COMMANDS = ("stylecode",)
USAGE = "usage: /stylecode create style|preset NAME [--public] | show CODE | revoke CODE | list"
HELP = "  /stylecode create style|preset NAME [--public] | show CODE | revoke CODE | list   share a style as a code"


class Chat(Protocol):
    engine: Engine
    user_id: int


async def run(chat: Chat, name: str, arg: str) -> str:
    """Run /stylecode for the terminal user (guild 0: their codes are their own unless --public)."""
    words = arg.split()
    sub, rest = (words[0].lower(), words[1:]) if words else ("list", [])
    engine, uid = chat.engine, chat.user_id
    if sub == "list" and not rest:
        return await style_codes.listing(engine, uid, 0)
    if sub in ("show", "revoke") and len(rest) == 1:
        if sub == "show":
            return await style_codes.show(engine, rest[0], uid, 0)
        return await style_codes.revoke(engine, rest[0], uid)
    if sub == "create":
        public = "--public" in rest
        rest = [w for w in rest if w != "--public"]
        if len(rest) >= 2 and rest[0].lower() in ("style", "preset"):
            return await style_codes.create(engine, rest[0].lower(), " ".join(rest[1:]), user_id=uid, guild_id=0,
                                            public=public)  # fmt: skip
    raise UserError(USAGE)
