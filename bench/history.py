"""History search benchmark: fill a scratch DB and print one JSON line of p50/p99 latencies (ms).

python -m bench.history --rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from engine.store import Store
from engine.store.db import migrate_file
from engine.store.history import Scope, SearchTooBroad

HEAVY_USER = 1  # owns a third of all rows
BROAD, RARE = "portrait", "zeppelin"


def fill(path: Path, rows: int, users: int, seed: int = 7) -> float:
    """Insert `rows` generations; BROAD is in ~86% of prompts, RARE in ~1 in 50k."""
    migrate_file(path)
    rng = random.Random(seed)
    vocab = [f"w{n}" for n in range(5000)]
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    batch = []
    for i in range(rows):
        words = rng.choices(vocab, k=8)
        if rng.random() < 0.86:
            words.append(BROAD)
        if rng.random() < 1 / 50_000:
            words.append(RARE)
        user = HEAVY_USER if rng.random() < 1 / 3 else rng.randrange(2, users + 2)
        batch.append((user, rng.randrange(1, 50), " ".join(words), i, time.time()))
        if len(batch) == 20_000 or i == rows - 1:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO generations (user_id, guild_id, prompt, seed, created_at) VALUES (?,?,?,?,?)",
                batch,
            )
            conn.execute("COMMIT")
            batch.clear()
    conn.execute("INSERT INTO generations_fts(generations_fts) VALUES ('optimize')")
    conn.close()
    return time.perf_counter() - t0


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50": round(statistics.median(s), 3),
        "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3),
        "n": len(s),
    }


async def timed(fn, n: int) -> tuple[list[float], list]:
    out, results = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            results.append(await fn())
        except SearchTooBroad as e:
            results.append(e)
        out.append((time.perf_counter() - t0) * 1000)
    return out, results


async def measure(path: Path, users: int, n: int) -> dict:
    store = await Store.open(path)
    h = store.history
    typical = Scope(user_id=2)
    heavy = Scope(user_id=HEAVY_USER)
    rare_users = [
        r[0]
        for r in await store.db.fetchall(
            "SELECT g.user_id FROM generations_fts f JOIN generations g ON g.id = f.rowid"
            " WHERE generations_fts MATCH ? LIMIT 1",
            [RARE],
        )
    ] or [2]
    res = {}
    res["rare"], _ = await timed(lambda: h.search(RARE, Scope(rare_users[0])), n)
    res["rare_heavy_user"], _ = await timed(lambda: h.search(RARE, heavy), n)
    res["broad_typical_user"], typical_results = await timed(lambda: h.search(BROAD, typical), n)
    res["broad_heavy_user"], heavy_results = await timed(lambda: h.search(BROAD, heavy), max(5, n // 10))
    mid = await h.db.fetchone(
        "SELECT id FROM generations WHERE user_id = ? ORDER BY id LIMIT 1 OFFSET ?", [HEAVY_USER, 100_000]
    )
    cursor = None
    if mid:
        from engine.store.history import _encode_cursor

        cursor = _encode_cursor(mid[0])
    res["page"], _ = await timed(lambda: h.recent(heavy, limit=10, cursor=cursor), n)
    page = await h.search(BROAD, typical, limit=10)
    res["search_next_page"], _ = await timed(
        lambda: h.search(BROAD, typical, limit=10, cursor=page.next_cursor), n
    )
    rows = await h.count()
    await store.close()
    out = {"rows": rows, **{k: pct(v) for k, v in res.items()}}
    out["broad_heavy_user"]["too_broad"] = sum(isinstance(r, SearchTooBroad) for r in heavy_results)
    out["broad_typical_user"]["hits_first_page"] = len(typical_results[0].items)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--n", type=int, default=200, help="samples per measurement")
    ap.add_argument("--db", help="reuse/keep this DB file instead of a temporary one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "bench.db"
        fill_s = None
        if not path.exists():
            fill_s = round(fill(path, args.rows, args.users), 1)
        result = asyncio.run(measure(path, args.users, args.n))
        targets = {"rare_p99_ms": 5, "broad_bounded_ms": 250, "page_ms": 5}
        print(json.dumps({"bench": "history", "fill_s": fill_s, **result, "targets": targets}))


if __name__ == "__main__":
    main()
