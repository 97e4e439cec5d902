"""The SQLite connection pair (one writer, one reader) behind every store: WAL, busy timeout, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from engine.store.migrations import LATEST, pending

T = TypeVar("T")


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(conn)` in one IMMEDIATE transaction on a plain sqlite3 connection (autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return out


class TooBroad(Exception):
    """A read was stopped because it ran past its time budget."""


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (trigger bodies stay whole)."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:80]}")
    return out


def apply_migrations(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring a plain sqlite3 connection (autocommit mode) to LATEST in one IMMEDIATE transaction."""

    def migrate(conn: sqlite3.Connection) -> int:
        before = conn.execute("PRAGMA user_version").fetchone()[0]
        for version, sql in pending(before):
            for stmt in split_statements(sql):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {version}")
        return before

    return _in_transaction(conn, migrate), LATEST


def migrate_file(path: str | Path, busy_timeout_ms: int = 10_000) -> int:
    """Open the file with plain sqlite3, switch it to WAL and migrate it; return the version it had."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        for p in _pragmas(busy_timeout_ms):
            conn.execute(p)
        return apply_migrations(conn)[0]
    finally:
        conn.close()


def _pragmas(busy_ms: int) -> tuple[str, ...]:
    return (
        f"PRAGMA busy_timeout = {busy_ms}",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
    )


class Database:
    """Async access: `write()` transactions are BEGIN IMMEDIATE and serialized; reads use a second connection."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._wlock = asyncio.Lock()
        self._rlock = asyncio.Lock()
        self.migrated_from: int | None = None

    async def open(self) -> Database:
        """Connect both ends, set pragmas and migrate to the latest schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.migrated_from = await asyncio.to_thread(migrate_file, self.path, self.busy_timeout_ms)
        self._w = await self._connect()
        self._r = await self._connect()
        return self

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(str(self.path), isolation_level=None)
        conn.row_factory = sqlite3.Row
        for p in _pragmas(self.busy_timeout_ms):
            await conn.execute(p)
        return conn

    async def close(self) -> None:
        """Close both connections (idempotent)."""
        for name in ("_r", "_w"):
            conn = getattr(self, name)
            if conn is not None:
                await conn.close()
                setattr(self, name, None)

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._w is None:
            raise RuntimeError("database is not open")
        return self._w

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._r is None:
            raise RuntimeError("database is not open")
        return self._r

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A serialized BEGIN IMMEDIATE transaction, committed on success and rolled back on error."""
        async with self._wlock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:  # a failed COMMIT rolls back too, as in _in_transaction
                await conn.execute("ROLLBACK")
                raise

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` as one serialized BEGIN IMMEDIATE transaction, in a single trip to the writer's thread.

        `fn` runs in that thread with the plain sqlite3 connection (rows are sqlite3.Row): no awaiting inside, so
        a hot write costs one thread hop instead of one per statement plus BEGIN and COMMIT.
        """
        async with self._wlock:
            conn = self.writer
            # aiosqlite runs every call as a function on its thread through _execute; this hands it ours
            return await conn._execute(_in_transaction, conn._conn, fn)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement in its own transaction; return lastrowid (or rowcount for updates)."""
        args, insert = tuple(params), sql.lstrip().upper().startswith("INSERT")

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(sql, args)
            return int(cur.lastrowid or 0) if insert else cur.rowcount

        return await self.transaction(run)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Read rows through the reader connection (one trip to its thread: execute and fetch together)."""
        async with self._rlock:
            return list(await self.reader.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetch_bounded(self, sql: str, params: Iterable[Any], budget_ms: int) -> list[sqlite3.Row]:
        """Read rows but give up with TooBroad once the query has run for budget_ms."""
        deadline = [0.0]  # set once the reader is ours: time spent waiting for it is not the query's

        def over_budget() -> int:
            return 1 if time.monotonic() > deadline[0] else 0

        async with self._rlock:
            conn = self.reader
            deadline[0] = time.monotonic() + budget_ms / 1000
            await conn.set_progress_handler(over_budget, 2000)
            try:
                cur = await conn.execute(sql, tuple(params))
                return list(await cur.fetchall())
            except sqlite3.OperationalError as e:
                if "interrupted" in str(e):
                    raise TooBroad(f"query stopped after {budget_ms} ms") from None
                raise
            finally:
                await conn.set_progress_handler(None, 0)

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0
