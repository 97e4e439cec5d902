"""The prompt library (styles, negative sets, ...), named presets and per-user/guild settings."""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from engine.store.db import Database

Category = Literal["style", "negative", "character", "lighting", "other"]
CATEGORIES: tuple[str, ...] = ("style", "negative", "character", "lighting", "other")
PresetKind = Literal["image", "llm"]


class UnknownEntry(LookupError):
    """A library label or preset name that does not exist; the message lists close names."""


def _unknown(what: str, name: str, names: list[str]) -> UnknownEntry:
    close = difflib.get_close_matches(name.lower(), names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else f" Known: {', '.join(sorted(names)[:20])}."
    return UnknownEntry(f"no {what} named '{name}'.{hint}")


@dataclass
class LibraryEntry:
    id: int
    label: str
    category: str
    content: str
    negative: str
    description: str
    guild_id: int
    author_id: int
    shipped: bool

    def apply(self, prompt: str) -> str:
        """Merge this style's template into a prompt ('{prompt}' marks where it goes)."""
        if "{prompt}" in self.content:
            return self.content.replace("{prompt}", prompt.strip())
        return f"{prompt.strip()}, {self.content}" if prompt.strip() else self.content


def _entry(row: Any) -> LibraryEntry:
    d = dict(row)
    d.pop("created_at", None)
    d["shipped"] = bool(d["shipped"])
    return LibraryEntry(**d)


def _key(name: str, what: str) -> str:
    """A label or preset name as stored (stripped, lower case); ValueError unless 1-64 characters."""
    key = name.strip().lower()
    if not key or len(key) > 64:
        raise ValueError(f"{what} must be 1-64 characters")
    return key


class Library:
    """Library entries: global ones (guild_id 0) plus each guild's own, the guild's winning on a clash."""

    def __init__(self, db: Database):
        self.db = db

    async def add(
        self, label: str, category: Category, content: str, *, negative: str = "", description: str = "",
        guild_id: int = 0, author_id: int = 0, shipped: bool = False,
    ) -> int:  # fmt: skip
        """Create or replace an entry in a guild (0 = global)."""
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
        label = _key(label, "label")
        return await self.db.execute(
            "INSERT INTO prompt_library (label, category, content, negative, description, guild_id, author_id,"
            " shipped, created_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (guild_id, category, label) DO UPDATE"
            " SET content=excluded.content, negative=excluded.negative, description=excluded.description,"
            " author_id=excluded.author_id, shipped=excluded.shipped",
            (label, category, content, negative, description, guild_id, author_id, int(shipped), time.time()),
        )

    async def list(self, category: Category, guild_id: int = 0) -> list[LibraryEntry]:
        """Entries visible in a guild, one per label (the guild's own shadows the global one)."""
        rows = await self.db.fetchall(
            "SELECT * FROM prompt_library WHERE category = ? AND guild_id IN (0, ?)"
            " ORDER BY label, guild_id DESC",
            (category, guild_id),
        )
        seen: dict[str, LibraryEntry] = {}
        for r in rows:
            seen.setdefault(r["label"], _entry(r))
        return list(seen.values())

    async def names(self, category: Category, guild_id: int = 0) -> list[str]:
        return [e.label for e in await self.list(category, guild_id)]

    async def get(self, label: str, category: Category, guild_id: int = 0) -> LibraryEntry:
        """The entry or UnknownEntry listing close names."""
        row = await self.db.fetchone(
            "SELECT * FROM prompt_library WHERE label = ? AND category = ? AND guild_id IN (0, ?)"
            " ORDER BY guild_id DESC LIMIT 1",
            (label.strip().lower(), category, guild_id),
        )
        if row is None:
            raise _unknown(category, label, await self.names(category, guild_id))
        return _entry(row)

    async def delete(self, label: str, category: Category, guild_id: int) -> bool:
        """Delete a guild's own entry (global shipped entries are not deletable from a guild)."""
        n = await self.db.execute(
            "DELETE FROM prompt_library WHERE label = ? AND category = ? AND guild_id = ?",
            (label.strip().lower(), category, guild_id),
        )
        return n > 0

    async def count(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM prompt_library")
        return int(row[0]) if row else 0


class Presets:
    """Named presets resolved user -> guild -> global (user_id/guild_id 0 = any)."""

    def __init__(self, db: Database):
        self.db = db

    async def save(
        self,
        kind: PresetKind,
        name: str,
        data: dict[str, Any],
        *,
        user_id: int = 0,
        guild_id: int = 0,
        shipped: bool = False,
    ) -> int:
        name = _key(name, "preset name")
        return await self.db.execute(
            "INSERT INTO presets (name, kind, user_id, guild_id, data, shipped, created_at)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (kind, guild_id, user_id, name)"
            " DO UPDATE SET data = excluded.data, shipped = excluded.shipped",
            (name, kind, user_id, guild_id, json.dumps(data, sort_keys=True), int(shipped), time.time()),
        )

    async def _visible(self, kind: PresetKind, user_id: int, guild_id: int, name: str | None = None) -> list[Any]:
        # Most specific first: the user's own, then the guild's, then global (of one name, or of all).
        return await self.db.fetchall(
            "SELECT * FROM presets WHERE kind = ? AND (? IS NULL OR name = ?) AND ((user_id = ? AND guild_id IN"
            " (0, ?)) OR (user_id = 0 AND guild_id = ?) OR (user_id = 0 AND guild_id = 0))"
            " ORDER BY name, (user_id != 0) DESC, (guild_id != 0) DESC",
            (kind, name, name, user_id, guild_id, guild_id),
        )

    @staticmethod
    def _entry(r: Any) -> dict[str, Any]:
        scope = "user" if r["user_id"] else "guild" if r["guild_id"] else "global"
        return {**json.loads(r["data"]), "name": r["name"], "scope": scope}

    async def list(self, kind: PresetKind, user_id: int = 0, guild_id: int = 0) -> list[dict[str, Any]]:
        """Visible presets, one per name, with 'name' and 'scope' (user/guild/global) added."""
        out: dict[str, dict[str, Any]] = {}
        for r in await self._visible(kind, user_id, guild_id):
            if r["name"] not in out:
                out[r["name"]] = self._entry(r)
        return list(out.values())

    async def resolve(
        self, kind: PresetKind, name: str, user_id: int = 0, guild_id: int = 0
    ) -> dict[str, Any]:
        """The most specific preset of that name, or UnknownEntry listing close names."""
        rows = await self._visible(kind, user_id, guild_id, name.strip().lower())
        if rows:
            return self._entry(rows[0])
        raise _unknown(f"{kind} preset", name, [p["name"] for p in await self.list(kind, user_id, guild_id)])

    async def delete(self, kind: PresetKind, name: str, *, user_id: int = 0, guild_id: int = 0) -> bool:
        n = await self.db.execute(
            "DELETE FROM presets WHERE kind = ? AND name = ? AND user_id = ? AND guild_id = ? AND shipped = 0",
            (kind, name.strip().lower(), user_id, guild_id),
        )
        return n > 0


@dataclass(frozen=True)
class Saved:
    """A requester's stored settings, read together: the user's and the guild's (empty outside a guild)."""

    user: dict[str, Any]
    guild: dict[str, Any]


class SettingsStore:
    """Per-user defaults and per-guild policy, stored as JSON objects."""

    def __init__(self, db: Database):
        self.db = db

    async def pair(self, user_id: int, guild_id: int) -> Saved:
        """The user's and the guild's settings in one read (guild 0 has none)."""
        rows = await self.db.fetchall(
            "SELECT 'user' AS scope, data FROM user_settings WHERE user_id = ?"
            " UNION ALL SELECT 'guild', data FROM guild_settings WHERE guild_id = ? AND guild_id != 0",
            (user_id, guild_id),
        )
        found = {r["scope"]: json.loads(r["data"]) for r in rows}
        return Saved(found.get("user", {}), found.get("guild", {}))

    async def get(self, table: Literal["user", "guild"], key: int) -> dict[str, Any]:
        col = "user_id" if table == "user" else "guild_id"
        row = await self.db.fetchone(f"SELECT data FROM {table}_settings WHERE {col} = ?", (key,))
        return json.loads(row["data"]) if row else {}

    async def update(self, table: Literal["user", "guild"], key: int, **values: Any) -> dict[str, Any]:
        """Merge values into the stored object (a None value removes the key); return the result."""
        col = "user_id" if table == "user" else "guild_id"
        async with self.db.write() as conn:
            cur = await conn.execute(f"SELECT data FROM {table}_settings WHERE {col} = ?", (key,))
            row = await cur.fetchone()
            data = json.loads(row["data"]) if row else {}
            data.update(values)
            data = {k: v for k, v in data.items() if v is not None}
            await conn.execute(
                f"INSERT INTO {table}_settings ({col}, data, updated_at) VALUES (?,?,?)"
                f" ON CONFLICT ({col}) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (key, json.dumps(data, sort_keys=True), time.time()),
            )
        return data
