"""Dataset export, front-neutral: a user's favorites as images + caption files + metadata.jsonl (kohya or jsonl).

kohya: DIR/<repeats>_<concept>/<name>.png with <name>.txt beside it (the kohya-ss folder convention), plus
DIR/metadata.jsonl. jsonl: DIR/<name>.png, DIR/<name>.txt and DIR/metadata.jsonl with `file_name` and `text`
(the Hugging Face imagefolder convention). The caption is the image's auto-tags when it has some, else the prompt.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bot.usecases.errors import UserError
from engine.store import Store
from engine.store.exports import ExportRow

Format = Literal["kohya", "jsonl"]
FORMATS: tuple[str, ...] = ("kohya", "jsonl")
KOHYA_FOLDER = "10_atelier"  # 10 repeats of the concept "atelier"
MAX_PARTS = 5  # zips DMed for one export at most


@dataclass(frozen=True)
class Item:
    """One exported image: where it is, what it is called in the dataset, its caption and metadata."""

    source: Path
    name: str
    caption: str
    meta: dict


def caption(row: ExportRow, index: int) -> str:
    """The image's auto-tags (comma-separated) when it has any, else the generation's prompt."""
    tags = row.tags[index] if index < len(row.tags) else []
    return ", ".join(tags) if tags else row.generation.prompt.strip()


def items_of(rows: list[ExportRow], outputs: Path | None = None) -> list[Item]:
    """Every existing image file of the rows (relative paths are under `outputs`), named <generation>-<index>;
    missing files are skipped."""
    out = []
    for row in rows:
        g = row.generation
        for i, path in enumerate(g.images):
            p = Path(path)
            if not p.is_absolute() and outputs is not None:
                p = Path(outputs) / p
            if not p.is_file():
                continue
            tags = row.tags[i] if i < len(row.tags) else []
            seeds = g.params.get("seeds") or []
            meta = {
                "generation_id": g.id, "index": i, "prompt": g.prompt, "negative": g.negative,
                "seed": seeds[i] if i < len(seeds) else g.seed, "preset": g.preset, "model": g.model,
                "tags": tags, "created_at": g.created_at,
            }  # fmt: skip
            out.append(Item(p, f"{g.id}-{i}", caption(row, i), meta))
    return out


async def collect(store: Store, user_id: int, favorites: bool = True, outputs: Path | None = None) -> list[Item]:
    """The user's exportable images; UserError when there are none."""
    if user_id <= 0:
        raise UserError("a user id is a positive number")
    items = items_of(await store.exports.rows(user_id, favorites=favorites), outputs)
    if not items:
        what = "favorites" if favorites else "generations"
        raise UserError(f"no {what} with image files to export (mark some with the ⭐ button first)")
    return items


def _layout(items: list[Item], fmt: Format) -> list[tuple[str, Item]]:
    """(path inside the dataset, item) per image."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; use one of: {', '.join(FORMATS)}")
    prefix = f"{KOHYA_FOLDER}/" if fmt == "kohya" else ""
    return [(f"{prefix}{it.name}{it.source.suffix or '.png'}", it) for it in items]


def _files(items: list[Item], fmt: Format) -> list[tuple[str, bytes | Path]]:
    """Every file of the dataset: images (as paths), captions, and the metadata JSONL last."""
    files: list[tuple[str, bytes | Path]] = []
    lines = []
    for rel, it in _layout(items, fmt):
        files.append((rel, it.source))
        files.append((rel.rsplit(".", 1)[0] + ".txt", it.caption.encode()))
        lines.append(json.dumps({"file_name": rel, "text": it.caption, **it.meta}, ensure_ascii=False))
    files.append(("metadata.jsonl", ("\n".join(lines) + "\n").encode()))
    return files


def write_dir(items: list[Item], fmt: Format, out: Path) -> int:
    """Write the dataset under `out` (created; an existing metadata.jsonl is refused); returns images written."""
    out = Path(out)
    if (out / "metadata.jsonl").exists():
        raise UserError(f"{out} already holds an export (metadata.jsonl); choose an empty folder")
    for rel, data in _files(items, fmt):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    return len(items)


def _size(data: bytes | Path) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def zip_parts(items: list[Item], fmt: Format, limit_bytes: int, max_parts: int = MAX_PARTS) -> list[bytes]:
    """The dataset as zips of at most `limit_bytes` each (an image with its caption never split); each part has
    its own metadata.jsonl. UserError when one image cannot fit or more than `max_parts` would be needed."""
    overhead = 4096
    groups: list[list[Item]] = [[]]
    used = 0
    for _, it in _layout(items, fmt):
        need = it.source.stat().st_size + len(it.caption.encode()) + 2 * len(json.dumps(it.meta)) + overhead
        if need > limit_bytes:
            raise UserError(f"image {it.name} alone is over the {limit_bytes // 1024 // 1024} MiB upload limit")
        if groups[-1] and used + need > limit_bytes:
            groups.append([])
            used = 0
        groups[-1].append(it)
        used += need
    if len(groups) > max_parts:
        total = sum(_size(it.source) for it in items) / 1024 / 1024
        raise UserError(
            f"your export is about {total:.0f} MiB, more than {max_parts} zips of the "
            f"{limit_bytes / 1024 / 1024:.0f} MiB upload limit; unfavorite some images, or ask the host to "
            "run `atelier export`"
        )
    parts = []
    for group in groups:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for rel, data in _files(group, fmt):
                z.writestr(rel, data.read_bytes() if isinstance(data, Path) else data)
        parts.append(buf.getvalue())
    return parts
