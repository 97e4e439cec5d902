"""Every generation remembered: insert, fetch, scoped full-text search with keyset pagination."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.store.db import Database, TooBroad

# bm25 weights per FTS column: prompt, negative, preset, style (prompt counts most).
BM25 = "bm25(generations_fts, 10.0, 1.0, 2.0, 3.0)"
MAX_TERMS = 32
SMALL_SCOPE = 20_000  # rows in scope below which a broad search walks the scope, not the index
RANK_LIMIT = 20_000  # matches that bm25 can rank well within the budget
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HistoryQueryError(ValueError):
    """A search the user can fix (too long, too broad, bad cursor); the message says how."""


class SearchTooBroad(HistoryQueryError):
    """The search matched too much to rank within the time budget."""


@dataclass(frozen=True)
class Scope:
    """Whose generations a search may see: always one user, optionally their whole guild."""

    user_id: int
    guild_id: int = 0
    include_guild: bool = False


@dataclass
class Generation:
    id: int
    user_id: int
    guild_id: int
    channel_id: int
    prompt: str
    negative: str
    params: dict[str, Any]
    seed: int
    model: str
    preset: str
    style: str
    images: list[str]
    parent_id: int | None
    created_at: float
    favorite: bool
    tags: str = ""  # normalized auto-tags, space-separated (engine/store/tags.py)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Generation:
        d = dict(row)
        d.pop("score", None)
        d["params"] = json.loads(d["params"])
        d["images"] = json.loads(d["images"])
        d["favorite"] = bool(d["favorite"])
        return cls(**d)


@dataclass
class Page:
    items: list[Generation] = field(default_factory=list)
    next_cursor: str | None = None


def _loose(term: str) -> str:
    """A quoted prefix term for a word's stem: "robots" -> "robot"* (plurals and other endings match)."""
    stem = term[:-2] if len(term) > 5 and term.lower().endswith("es") else term
    stem = stem[:-1] if len(stem) > 3 and stem.lower().endswith("s") else stem
    return '"' + stem.replace('"', '""') + '"*'


def fts_query(text: str, max_chars: int = 500, *, any_term: bool = False) -> str | None:
    """Turn any user string into a safe FTS5 query: every term quoted, implicit AND; None if blank.

    any_term: match any of the words, each by its stem as a prefix (the loose fallback of a search).
    """
    if len(text) > max_chars:
        raise HistoryQueryError(f"search is {len(text)} characters; the limit is {max_chars}")
    clean = _CONTROL.sub(" ", text.encode("utf-8", "replace").decode("utf-8"))
    terms = clean.split()
    if len(terms) > MAX_TERMS:
        raise HistoryQueryError(f"search has {len(terms)} words; use at most {MAX_TERMS}")
    if not terms:
        return None
    if any_term:
        return " OR ".join(_loose(t) for t in terms)
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _encode_cursor(*parts: float | int) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def _decode_cursor(cursor: str, n: int) -> list[float]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(parts, list) and len(parts) == n and all(isinstance(p, int | float) for p in parts):
            return parts
    except (ValueError, TypeError):
        pass
    raise HistoryQueryError("that page link is no longer valid; run the search again")


def _scope_sql(scope: Scope) -> tuple[str, list[int]]:
    if scope.include_guild and scope.guild_id:
        return "(g.user_id = ? OR g.guild_id = ?)", [scope.user_id, scope.guild_id]
    return "g.user_id = ?", [scope.user_id]


class History:
    """Generations table access; all reads are scoped to a requester by SQL, never by FTS filters."""

    def __init__(self, db: Database, budget_ms: int = 200, max_query_chars: int = 500):
        self.db = db
        self.budget_ms = budget_ms
        self.max_query_chars = max_query_chars

    async def add(
        self,
        *,
        user_id: int,
        prompt: str,
        seed: int,
        guild_id: int = 0,
        channel_id: int = 0,
        negative: str = "",
        params: dict[str, Any] | None = None,
        model: str = "",
        preset: str = "",
        style: str = "",
        images: list[str] | None = None,
        parent_id: int | None = None,
        created_at: float | None = None,
    ) -> int:
        """Record one generation and return its id."""
        return await self.db.execute(
            "INSERT INTO generations (user_id, guild_id, channel_id, prompt, negative, params, seed, model,"
            " preset, style, images, parent_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                user_id,
                guild_id,
                channel_id,
                prompt,
                negative,
                json.dumps(params or {}, sort_keys=True),
                seed,
                model,
                preset,
                style,
                json.dumps(images or []),
                parent_id,
                created_at or time.time(),
            ),
        )

    async def record_for_job(
        self, job_id: int, row: dict[str, Any], then: Callable[[sqlite3.Connection, int], None] | None = None
    ) -> tuple[int, bool]:
        """Insert a job's history row unless the job has one: (generation_id, created), in one transaction;
        `then(conn, generation_id)` runs in it after an insert (e.g. the result cache's entry)."""
        params, images = json.dumps(row["params"], sort_keys=True), json.dumps(row["images"])

        def insert(conn: sqlite3.Connection) -> tuple[int, bool]:
            found = conn.execute("SELECT generation_id FROM generation_jobs WHERE job_id = ?", (job_id,)).fetchone()
            if found is not None:
                return int(found[0]), False
            cur = conn.execute(
                "INSERT INTO generations (user_id, guild_id, channel_id, prompt, negative, params, seed, model,"
                " preset, style, images, parent_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row["user_id"], row["guild_id"], row["channel_id"], row["prompt"], row["negative"], params,
                    row["seed"], row["model"], row["preset"], row["style"], images, row["parent_id"], time.time(),
                ),
            )  # fmt: skip
            gen_id = int(cur.lastrowid or 0)
            conn.execute("INSERT INTO generation_jobs (job_id, generation_id) VALUES (?, ?)", (job_id, gen_id))
            if then is not None:
                then(conn, gen_id)
            return gen_id, True

        return await self.db.transaction(insert)

    async def of_job(self, job_id: int) -> Generation | None:
        """The generation a job recorded (found after a retry), or None."""
        row = await self.db.fetchone(
            "SELECT g.* FROM generation_jobs j JOIN generations g ON g.id = j.generation_id WHERE j.job_id = ?",
            (job_id,),
        )
        return Generation.from_row(row) if row is not None else None

    async def get(self, gen_id: int, scope: Scope) -> Generation | None:
        """One generation if the scope may see it."""
        where, args = _scope_sql(scope)
        row = await self.db.fetchone(
            f"SELECT g.* FROM generations g WHERE g.id = ? AND {where}", [gen_id, *args]
        )
        return Generation.from_row(row) if row else None

    async def set_favorite(self, gen_id: int, user_id: int, favorite: bool = True) -> bool:
        """Mark or unmark a favorite; only the owner may."""
        n = await self.db.execute(
            "UPDATE generations SET favorite = ? WHERE id = ? AND user_id = ?",
            (int(favorite), gen_id, user_id),
        )
        return n == 1

    async def delete(self, gen_id: int, user_id: int) -> Generation | None:
        """Delete the owner's generation; return it (so image files can be removed) or None."""
        async with self.db.write() as conn:
            cur = await conn.execute(
                "SELECT * FROM generations WHERE id = ? AND user_id = ?", (gen_id, user_id)
            )
            row = await cur.fetchone()
            if row is None:
                return None
            await conn.execute("DELETE FROM generations WHERE id = ?", (gen_id,))
        return Generation.from_row(row)

    async def recent(self, scope: Scope, limit: int = 10, cursor: str | None = None) -> Page:
        """Newest first, keyset-paginated on id."""
        where, args = _scope_sql(scope)
        before = int(_decode_cursor(cursor, 1)[0]) if cursor else 2**62
        rows = await self.db.fetchall(
            f"SELECT g.* FROM generations g WHERE {where} AND g.id < ? ORDER BY g.id DESC LIMIT ?",
            [*args, before, limit + 1],
        )
        items = [Generation.from_row(r) for r in rows[:limit]]
        nxt = _encode_cursor(items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def search(
        self, text: str, scope: Scope, limit: int = 10, cursor: str | None = None, *, any_term: bool = False
    ) -> Page:
        """Best matches first (bm25, prompt weighted; newest first for very common terms); blank text = recent.

        Keyset-paginated on (score, id). any_term: any of the words, by stem (see fts_query).
        """
        query = fts_query(text, self.max_query_chars, any_term=any_term)
        if query is None:
            return await self.recent(scope, limit, cursor)
        where, args = _scope_sql(scope)
        after = _decode_cursor(cursor, 2) if cursor else [-1e308, 0]
        source, score = await self._plan(query, where, args)
        sql = (
            f"WITH m AS MATERIALIZED (SELECT g.*, {score} AS score FROM {source}"
            f" WHERE generations_fts MATCH ? AND {where})"
            " SELECT * FROM m WHERE score > ? OR (score = ? AND id > ?) ORDER BY score, id LIMIT ?"
        )
        params = [query, *args, after[0], after[0], int(after[1]), limit + 1]
        try:
            rows = await self.db.fetch_bounded(sql, params, self.budget_ms)
        except TooBroad:
            raise SearchTooBroad(
                "that search matches too many generations to rank quickly; add a more specific word"
            ) from None
        items = [Generation.from_row(r) for r in rows[:limit]]
        nxt = _encode_cursor(rows[limit - 1]["score"], rows[limit - 1]["id"]) if len(rows) > limit else None
        return Page(items, nxt)

    async def _plan(self, query: str, where: str, args: list[int]) -> tuple[str, str]:
        """Pick (FROM clause, score expression) so that no plan scans or ranks a huge match set.

        Few matches: FTS drives and bm25 ranks them. Many matches but a small scope: walk the scope and
        probe the index by rowid, newest first (bm25 per probe would re-count the whole doclist each time).
        Many of both: FTS drives with bm25, bounded by the time budget (then "too broad").
        Every count is capped, so planning never costs a full scan.
        """
        matches = await self._count(
            "SELECT 1 FROM generations_fts WHERE generations_fts MATCH ?", [query], RANK_LIMIT + 1
        )
        if matches > RANK_LIMIT:
            scope_rows = await self._count(
                f"SELECT 1 FROM generations g WHERE {where}", args, SMALL_SCOPE + 1
            )
            if scope_rows <= SMALL_SCOPE:
                return "generations g CROSS JOIN generations_fts f ON f.rowid = g.id", "-g.id"
        return "generations_fts f CROSS JOIN generations g ON g.id = f.rowid", BM25

    async def _count(self, select: str, args: list, cap: int) -> int:
        row = await self.db.fetchone(f"SELECT count(*) FROM ({select} LIMIT {int(cap)})", args)
        return int(row[0]) if row else 0

    async def count(self, user_id: int | None = None) -> int:
        """Number of generations (all, or one user's)."""
        if user_id is None:
            row = await self.db.fetchone("SELECT count(*) FROM generations")
        else:
            row = await self.db.fetchone("SELECT count(*) FROM generations WHERE user_id = ?", [user_id])
        return int(row[0]) if row else 0
