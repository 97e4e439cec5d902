"""Ordered migrations: a blank DB and an old DB with data both reach the latest schema, losing nothing."""

import sqlite3

import pytest

from engine.store.db import Database, split_statements
from engine.store.history import Scope
from engine.store.migrations import LATEST, MIGRATIONS

TABLES = {
    "generations",
    "generations_fts",
    "prompt_library",
    "presets",
    "jobs",
    "user_settings",
    "guild_settings",
    "generation_jobs",
    "agent_turns",
    "agent_turn_jobs",
    "style_codes",
}


def tables(path) -> set[str]:
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table')")}


async def test_blank_db_reaches_latest(tmp_path):
    path = tmp_path / "blank.db"
    db = await Database(path).open()
    assert db.migrated_from == 0
    assert await db.schema_version() == LATEST
    mode = await db.fetchone("PRAGMA journal_mode")
    assert mode[0] == "wal"
    await db.close()
    assert tables(path) >= TABLES


async def test_reopening_is_idempotent(open_store):
    s = await open_store("again.db")
    await s.history.add(user_id=1, prompt="a lighthouse in fog", seed=1)
    n_lib = await s.library.count()
    await s.close()
    s = await open_store("again.db")
    assert s.db.migrated_from == LATEST
    assert await s.history.count() == 1
    assert await s.library.count() == n_lib  # seeding twice adds nothing


def make_v1_db(path) -> None:
    """A database as the first release left it, with history in it."""
    with sqlite3.connect(path, isolation_level=None) as c:
        for stmt in split_statements(MIGRATIONS[0]):
            c.execute(stmt)
        c.execute("PRAGMA user_version = 1")
        for i in range(50):
            c.execute(
                "INSERT INTO generations (user_id, guild_id, prompt, negative, params, seed, model, preset, style,"
                " images, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    i % 3,
                    7,
                    f"old lighthouse number {i}",
                    "blurry",
                    '{"steps": 20}',
                    1000 + i,
                    "m",
                    "sd15",
                    "watercolor",
                    '["a.png"]',
                    1.0 + i,
                ),
            )


async def test_old_db_with_data_migrates_without_loss(tmp_path, open_store):
    path = tmp_path / "old.db"
    make_v1_db(path)
    with sqlite3.connect(path) as c:
        before = c.execute("SELECT * FROM generations ORDER BY id").fetchall()
    s = await open_store("old.db")
    assert s.db.migrated_from == 1
    assert await s.db.schema_version() == LATEST
    after = [tuple(r) for r in await s.db.fetchall("SELECT * FROM generations ORDER BY id")]
    assert [row[: len(before[0])] for row in after] == before  # columns added later (tags) come last
    # the old rows are still searchable, scoped, and the new tables work
    page = await s.history.search("lighthouse", Scope(user_id=1), limit=100)
    assert len(page.items) == len([b for b in before if b[1] == 1]) > 0
    assert all(g.user_id == 1 for g in page.items)
    assert await s.library.count() > 0
    from engine.store.turns import TurnRecord

    turn_id = await s.turns.add(TurnRecord(user_id=1, request="draw a fox", route="generate", trace={"why": "x"}))
    assert (await s.turns.latest(1)).id == turn_id and await s.turns.latest(2) is None
    await s.close()
    assert tables(path) >= TABLES


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(RuntimeError, match="newer than this Atelier"):
        await Database(path).open()


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    from engine.store import db as dbmod
    from engine.store import migrations

    path = tmp_path / "broken.db"
    broken = (*MIGRATIONS, "CREATE TABLE ok_one (x); CREATE TABLE generations (y);")
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    monkeypatch.setattr(migrations, "LATEST", len(broken))
    with pytest.raises(sqlite3.Error):
        dbmod.migrate_file(path)
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] == 0


async def test_a_transaction_runs_whole_in_one_trip_or_not_at_all(tmp_path):
    async with Database(tmp_path / "t.db") as db:
        await db.execute("CREATE TABLE t (x INTEGER)")

        def two(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("INSERT INTO t VALUES (2)")
            return conn.execute("SELECT SUM(x) FROM t").fetchone()[0]

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (3)")
            raise ValueError("halfway")

        assert await db.transaction(two) == 3
        with pytest.raises(ValueError, match="halfway"):
            await db.transaction(broken)
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM t ORDER BY x")] == [(1,), (2,)]
        assert await db.execute("INSERT INTO t VALUES (4)") > 0 and await db.execute("UPDATE t SET x = 0") == 3
        assert not db.writer.in_transaction  # nothing left open for the next writer
