"""Atelier's memory: one SQLite file (WAL) holding history, library, presets, jobs and settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.store.apikeys import ApiKeys
from engine.store.cache import Costs, ResultCache
from engine.store.db import Database
from engine.store.exports import ExportReader
from engine.store.history import History
from engine.store.library import Library, Presets, SettingsStore
from engine.store.seed import UserPresetList, load_user_presets, seed
from engine.store.style_codes import StyleCodes
from engine.store.tags import TagStore
from engine.store.turns import TurnStore
from engine.store.web import WebStore


@dataclass
class Store:
    db: Database
    history: History
    library: Library
    presets: Presets
    settings: SettingsStore
    turns: TurnStore
    apikeys: ApiKeys
    cache: ResultCache = field(init=False)
    costs: Costs = field(init=False)
    web: WebStore = field(init=False)
    tags: TagStore = field(init=False)
    exports: ExportReader = field(init=False)
    style_codes: StyleCodes = field(init=False)

    def __post_init__(self) -> None:
        self.cache, self.costs = ResultCache(self.db), Costs(self.db)
        self.web = WebStore(self.db, self.history.budget_ms, self.history.max_query_chars)
        self.tags = TagStore(self.db)
        self.exports = ExportReader(self.db, self.tags)
        self.style_codes = StyleCodes(self.db)

    @classmethod
    async def open(
        cls, path: str | Path, *, budget_ms: int = 200, max_query_chars: int = 500,
        user_presets: UserPresetList | None = None,
    ) -> Store:  # fmt: skip
        """Open (creating and migrating as needed) and seed the shipped library and the user's presets."""
        db = await Database(path).open()
        history = History(db, budget_ms, max_query_chars)
        store = cls(db, history, Library(db), Presets(db), SettingsStore(db), TurnStore(db), ApiKeys(db))
        await seed(db, user=user_presets)
        return store

    async def close(self) -> None:
        await self.db.close()

    async def integrity(self) -> list[str]:
        """SQLite's integrity_check lines (["ok"] for a sound database)."""
        return [r[0] for r in await self.db.fetchall("PRAGMA integrity_check")]

    async def stats(self) -> dict[str, Any]:
        """Counts and sizes for `atelier db stats`."""

        async def scalar(sql: str) -> int:
            row = await self.db.fetchone(sql)
            return int(row[0]) if row else 0

        jobs = {
            r["state"]: r["n"]
            for r in await self.db.fetchall("SELECT state, count(*) AS n FROM jobs GROUP BY state")
        }
        size = sum(
            os.path.getsize(p) for p in (f"{self.db.path}", f"{self.db.path}-wal") if os.path.exists(p)
        )
        return {
            "path": str(self.db.path),
            "schema_version": await self.db.schema_version(),
            "size_bytes": size,
            "generations": await scalar("SELECT count(*) FROM generations"),
            "favorites": await scalar("SELECT count(*) FROM generations WHERE favorite = 1"),
            "users": await scalar("SELECT count(DISTINCT user_id) FROM generations"),
            "library": {
                r["category"]: r["n"]
                for r in await self.db.fetchall(
                    "SELECT category, count(*) AS n FROM prompt_library GROUP BY category"
                )
            },
            "presets": {
                r["kind"]: r["n"]
                for r in await self.db.fetchall("SELECT kind, count(*) AS n FROM presets GROUP BY kind")
            },
            "jobs": jobs,
        }


async def open_store(settings: Any) -> Store:
    """Open the store named by a Settings object."""
    return await Store.open(
        settings.path("db"),
        budget_ms=settings.history.search_budget_ms,
        max_query_chars=settings.history.max_query_chars,
        user_presets=load_user_presets(settings),
    )
