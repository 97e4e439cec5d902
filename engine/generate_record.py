"""One history row per job: written once (generation_jobs) and turned into the result fronts post."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.db import Database


_INSERT = (
    "INSERT INTO generations (user_id, guild_id, channel_id, prompt, negative, params, seed, model, preset,"
    " style, images, parent_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


async def record_generation(db: Database, job_id: int, row: dict[str, Any]) -> tuple[int, bool]:
    """Insert the job's history row unless it has one; (generation_id, created) in one transaction."""
    async with db.write() as conn:
        cur = await conn.execute("SELECT generation_id FROM generation_jobs WHERE job_id = ?", (job_id,))
        found = await cur.fetchone()
        if found is not None:
            return int(found[0]), False
        cur = await conn.execute(
            _INSERT,
            (
                row["user_id"], row["guild_id"], row["channel_id"], row["prompt"], row["negative"],
                json.dumps(row["params"], sort_keys=True), row["seed"], row["model"], row["preset"],
                row["style"], json.dumps(row["images"]), row["parent_id"], time.time(),
            ),
        )  # fmt: skip
        gen_id = int(cur.lastrowid)
        await conn.execute(
            "INSERT INTO generation_jobs (job_id, generation_id) VALUES (?, ?)", (job_id, gen_id)
        )
        return gen_id, True


def result_of(gen_id: int, row: dict[str, Any]) -> dict[str, Any]:
    """The job result posted to fronts, built from a history row (fresh or found after a retry)."""
    p = row["params"]
    keys = ("prompt", "negative", "preset", "style", "model", "parent_id")
    return {
        "generation_id": gen_id,
        "images": list(row["images"]),
        "seeds": p["seeds"],
        "spoilers": p["spoilers"],
        "withheld": p["withheld"],
        "withheld_message": p.get("withheld_message"),
        "params": p,
        **{k: row[k] for k in keys},
    }
