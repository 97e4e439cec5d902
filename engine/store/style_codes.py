"""Style codes: a short code (X7K2) for a snapshot of a style or an image preset, shared in a guild or publicly."""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from engine.store.db import Database

CodeKind = Literal["style", "preset"]
KINDS: tuple[str, ...] = ("style", "preset")
# No 0/O, 1/I/L: a code read aloud or from a screenshot is not misread.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 4  # 31**4 ≈ 920k codes; visibility (guild or public), not secrecy, guards them
MAX_LENGTH = 8
TRIES_PER_LENGTH = 8  # collisions: redraw, then one character longer
_SHAPE = re.compile(rf"^[{ALPHABET}]{{{CODE_LENGTH},{MAX_LENGTH}}}$")


class UnknownCode(LookupError):
    """A code that does not exist, is revoked, or is not shared with the asker: one message for all three."""

    def __init__(self, code: str):
        super().__init__(f"style code '{code}' is unknown or not shared with you")


class MalformedCode(ValueError):
    """Text that cannot be a style code at all."""


def normalize(code: str) -> str:
    """Upper-case, without spaces and dashes; MalformedCode when it cannot be a code."""
    text = re.sub(r"[\s-]", "", code).upper()
    if not _SHAPE.match(text):
        raise MalformedCode(
            f"'{code.strip()[:20]}' is not a style code: {CODE_LENGTH}-{MAX_LENGTH} characters of {ALPHABET}"
        )
    return text


def draw_code(length: int) -> str:
    """A random code of `length` characters (secrets, not random)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class StyleCode:
    """One code: what it expands to (a snapshot), who made it, where it is visible, whether it is revoked."""

    id: int
    code: str
    kind: str
    name: str
    data: dict[str, Any]
    user_id: int
    guild_id: int
    public: bool
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def visible_to(self, user_id: int, guild_id: int) -> bool:
        """Its creator, its guild (a code made outside a guild: its creator only), or anyone when public."""
        return self.public or self.user_id == user_id or (self.guild_id != 0 and self.guild_id == guild_id)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StyleCode:
        d = dict(row)
        d["data"], d["public"] = json.loads(d["data"]), bool(d["public"])
        return cls(**d)


class StyleCodes:
    """Create, resolve, list and revoke style codes."""

    def __init__(self, db: Database, draw: Callable[[int], str] = draw_code) -> None:
        self.db = db
        self.draw = draw

    async def create(
        self, kind: CodeKind, name: str, data: dict[str, Any], *, user_id: int, guild_id: int, public: bool = False
    ) -> StyleCode:  # fmt: skip
        """A new code for a snapshot; a collision draws again (then a longer code)."""
        if kind not in KINDS:
            raise ValueError(f"a style code shares a style or a preset, not {kind!r}")
        body = json.dumps(data, sort_keys=True)
        for length in range(CODE_LENGTH, MAX_LENGTH + 1):
            for _ in range(TRIES_PER_LENGTH):
                code = self.draw(length)
                try:
                    row_id = await self.db.execute(
                        "INSERT INTO style_codes (code, kind, name, data, user_id, guild_id, public, created_at)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        (code, kind, name, body, user_id, guild_id, int(public), time.time()),
                    )
                except sqlite3.IntegrityError:
                    continue
                return await self._by_id(row_id)
        raise RuntimeError("could not draw a free style code; the code space is exhausted")

    async def _by_id(self, row_id: int) -> StyleCode:
        row = await self.db.fetchone("SELECT * FROM style_codes WHERE id = ?", (row_id,))
        assert row is not None  # just inserted
        return StyleCode.from_row(row)

    async def resolve(self, code: str, user_id: int, guild_id: int) -> StyleCode:
        """The live code as this user sees it; UnknownCode when missing, revoked or not shared with them."""
        key = normalize(code)
        row = await self.db.fetchone("SELECT * FROM style_codes WHERE code = ?", (key,))
        found = StyleCode.from_row(row) if row is not None else None
        if found is None or found.revoked or not found.visible_to(user_id, guild_id):
            raise UnknownCode(key)
        return found

    async def visible(self, user_id: int, guild_id: int, limit: int = 100) -> list[StyleCode]:
        """Live codes the user may use and see listed: their own and their guild's (newest first)."""
        rows = await self.db.fetchall(
            "SELECT * FROM style_codes WHERE revoked_at IS NULL AND (user_id = ? OR (guild_id != 0 AND guild_id = ?))"
            " ORDER BY id DESC LIMIT ?",
            (user_id, guild_id, limit),
        )
        return [StyleCode.from_row(r) for r in rows]

    async def revoke(self, code: str, user_id: int) -> bool:
        """Revoke one of the user's own live codes; False when they have no such code."""
        n = await self.db.execute(
            "UPDATE style_codes SET revoked_at = ? WHERE code = ? AND user_id = ? AND revoked_at IS NULL",
            (time.time(), normalize(code), user_id),
        )
        return n > 0
