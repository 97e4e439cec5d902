"""Reads for dataset export: one user's favorite (or all) generations with their per-image auto-tags."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.store.db import Database
from engine.store.history import Generation
from engine.store.tags import TagStore


@dataclass
class ExportRow:
    generation: Generation
    tags: list[list[str]] = field(default_factory=list)  # per image index


class ExportReader:
    """A user's generations in id order, in pages, with their tags."""

    def __init__(self, db: Database, tags: TagStore) -> None:
        self.db = db
        self.tags = tags

    async def rows(self, user_id: int, favorites: bool = True, limit: int = 10_000) -> list[ExportRow]:
        """Up to `limit` of the user's (favorite) generations, oldest first."""
        fav = " AND favorite = 1" if favorites else ""
        found = await self.db.fetchall(
            f"SELECT * FROM generations WHERE user_id = ?{fav} ORDER BY id LIMIT ?", (user_id, limit)
        )
        out = []
        for r in found:
            g = Generation.from_row(r)
            out.append(ExportRow(g, await self.tags.of(g.id)))
        return out
