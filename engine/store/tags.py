"""Auto-tags per generation image (normalized words), which generations still need tagging, and tag filters."""

from __future__ import annotations

import time

from engine.store.db import Database
from engine.store.history import Generation, Scope

MAX_ATTEMPTS = 2  # a generation whose tagging failed this often is left alone


class TagStore:
    """generation_tags rows, the generations.tags FTS column, and the tagging state of each generation."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def pending(self, limit: int = 1, since_id: int = 0) -> list[Generation]:
        """Newest untagged generations first (never tagged, or failed fewer than MAX_ATTEMPTS times)."""
        rows = await self.db.fetchall(
            "SELECT g.* FROM generations g LEFT JOIN tagging t ON t.generation_id = g.id"
            " WHERE g.id > ? AND g.images != '[]' AND (t.generation_id IS NULL OR"
            " (t.state = 'failed' AND t.attempts < ?)) ORDER BY g.id DESC LIMIT ?",
            (since_id, MAX_ATTEMPTS, limit),
        )
        return [Generation.from_row(r) for r in rows]

    async def set_tags(self, generation_id: int, per_image: list[list[str]]) -> None:
        """Store each image's tags (replacing earlier ones) and mark the generation tagged."""
        union = sorted({t for tags in per_image for t in tags})
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM generation_tags WHERE generation_id = ?", (generation_id,))
            await conn.executemany(
                "INSERT OR IGNORE INTO generation_tags (generation_id, idx, tag) VALUES (?, ?, ?)",
                [(generation_id, i, t) for i, tags in enumerate(per_image) for t in tags],
            )
            await conn.execute("UPDATE generations SET tags = ? WHERE id = ?", (" ".join(union), generation_id))
            await conn.execute(
                "INSERT OR REPLACE INTO tagging (generation_id, state, attempts, updated_at)"
                " VALUES (?, 'done', COALESCE((SELECT attempts FROM tagging WHERE generation_id = ?), 0) + 1, ?)",
                (generation_id, generation_id, time.time()),
            )

    async def mark_failed(self, generation_id: int) -> None:
        """Count one failed tagging attempt."""
        await self.db.execute(
            "INSERT INTO tagging (generation_id, state, attempts, updated_at) VALUES (?, 'failed', 1, ?)"
            " ON CONFLICT(generation_id) DO UPDATE SET state = 'failed', attempts = attempts + 1,"
            " updated_at = excluded.updated_at",
            (generation_id, time.time()),
        )

    async def of(self, generation_id: int) -> list[list[str]]:
        """Tags per image index (an empty list for an image without tags)."""
        rows = await self.db.fetchall(
            "SELECT idx, tag FROM generation_tags WHERE generation_id = ? ORDER BY idx, tag", (generation_id,)
        )
        out: list[list[str]] = []
        for r in rows:
            while len(out) <= r["idx"]:
                out.append([])
            out[r["idx"]].append(r["tag"])
        return out

    async def with_tag(self, tag: str, scope: Scope, limit: int = 10, before_id: int | None = None) -> list[Generation]:
        """Generations in `scope` that carry `tag` (already normalized), newest first."""
        where, args = ("(g.user_id = ? OR g.guild_id = ?)", [scope.user_id, scope.guild_id]) if (
            scope.include_guild and scope.guild_id
        ) else ("g.user_id = ?", [scope.user_id])
        rows = await self.db.fetchall(
            f"SELECT g.* FROM generations g WHERE {where} AND g.id < ? AND EXISTS"
            " (SELECT 1 FROM generation_tags t WHERE t.generation_id = g.id AND t.tag = ?)"
            " ORDER BY g.id DESC LIMIT ?",
            [*args, before_id if before_id is not None else 2**62, tag, limit],
        )
        return [Generation.from_row(r) for r in rows]

    async def having(self, generation_ids: list[int], tags: list[str]) -> set[int]:
        """The ids among `generation_ids` that carry every one of `tags`."""
        if not generation_ids or not tags:
            return set(generation_ids)
        marks = ",".join("?" * len(generation_ids))
        tag_marks = ",".join("?" * len(tags))
        rows = await self.db.fetchall(
            f"SELECT generation_id FROM generation_tags WHERE generation_id IN ({marks}) AND tag IN ({tag_marks})"
            " GROUP BY generation_id HAVING count(DISTINCT tag) = ?",
            [*generation_ids, *tags, len(set(tags))],
        )
        return {int(r[0]) for r in rows}

    async def top(self, user_id: int, limit: int = 20) -> list[tuple[str, int]]:
        """A user's most frequent tags with their generation counts."""
        rows = await self.db.fetchall(
            "SELECT t.tag, count(DISTINCT t.generation_id) AS n FROM generation_tags t"
            " JOIN generations g ON g.id = t.generation_id WHERE g.user_id = ?"
            " GROUP BY t.tag ORDER BY n DESC, t.tag LIMIT ?",
            (user_id, limit),
        )
        return [(r["tag"], int(r["n"])) for r in rows]
