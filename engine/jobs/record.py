"""A job's images on disk (outputs/<day>/<job>-<i>.png, atomically) and its one history row, as a JobResult."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import Settings
from engine.jobs.result import JobResult
from engine.runtime.diffusion.png import save_png
from engine.store.jobs import Job

if TYPE_CHECKING:
    from PIL import Image

ROW_KEYS = ("prompt", "negative", "preset", "style", "model", "parent_id")


def output_folder(settings: Settings, job: Job) -> Path:
    """outputs/<yyyy-mm-dd of the job's creation>, created if missing."""
    day = dt.datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d")
    folder = settings.path("outputs") / day
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_images(
    settings: Settings, job: Job, images: list[Image.Image], positions: list[int], meta: dict[str, Any]
) -> list[str]:
    """Write each PNG atomically (temp file + rename) so a crash never leaves a torn file (blocking)."""
    folder = output_folder(settings, job)
    paths = []
    for image, pos, seed in zip(images, positions, meta["params"]["seeds"], strict=True):
        path = folder / f"{job.id}-{pos}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        save_png(image, tmp, {**meta, "seed": seed})
        os.replace(tmp, path)
        paths.append(str(path))
    return paths


def result_of(gen_id: int, row: dict[str, Any]) -> JobResult:
    """The result fronts post, built from a history row (fresh or found after a retry)."""
    p = row["params"]
    return JobResult(
        generation_id=gen_id, images=list(row["images"]), seeds=p["seeds"], spoilers=p["spoilers"],
        withheld=p.get("withheld", 0), withheld_message=p.get("withheld_message"), params=p,
        **{k: row[k] for k in ROW_KEYS},
    )  # fmt: skip
