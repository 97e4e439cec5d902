"""A writer killed with SIGKILL mid-transaction leaves an intact database with every committed row."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from engine.store import Store

    async def main(path):
        store = await Store.open(path)
        batch = 0
        while True:
            batch += 1
            async with store.db.write() as conn:
                ids = []
                for i in range(25):
                    cur = await conn.execute(
                        "INSERT INTO generations (user_id, prompt, seed, created_at) VALUES (?,?,?,0)",
                        (batch % 4, f"crash test batch {batch} row {i}", batch * 100 + i))
                    ids.append(cur.lastrowid)
                print("OPEN", batch, flush=True)
                time.sleep(0.02)  # hold the transaction open so the kill can land inside it
            print("COMMITTED", batch, " ".join(map(str, ids)), flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_sigkill_mid_transaction_loses_only_uncommitted(tmp_path):
    path = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    committed: list[int] = []
    open_batches = 0
    for line in proc.stdout:
        kind, batch, *ids = line.split()
        if kind == "COMMITTED":
            committed += [int(i) for i in ids]
        elif kind == "OPEN":
            open_batches += 1
            if open_batches == 12:  # inside the 12th transaction: 11 committed, 1 open
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) == 11 * 25

    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        c.execute("INSERT INTO generations_fts(generations_fts) VALUES ('integrity-check')")
        present = {r[0] for r in c.execute("SELECT id FROM generations")}
        assert set(committed) <= present
        assert len(present) == len(committed)  # the open batch left nothing behind
        hits = c.execute("SELECT count(*) FROM generations_fts WHERE generations_fts MATCH '\"batch\"'")
        assert hits.fetchone()[0] == len(committed)

    async def reopen():
        from engine.store import Store

        store = await Store.open(path)
        assert await store.history.count() == len(committed)
        await store.close()

    asyncio.run(reopen())
