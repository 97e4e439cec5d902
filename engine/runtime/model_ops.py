"""`atelier models pull` and `rm`: fetch a preset's hub files where the engine reads them, or delete them.

Only hub caches are touched (the default Hugging Face cache and paths.models), plus the chunks file Atelier
assembles in paths.models; local paths, installed packages and the demo models are never deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.utils import filter_repo_objects
from tqdm import tqdm

from engine.config import Settings
from engine.runtime.llm.chunks import ASSEMBLED_DIR, parse_chunks
from engine.runtime.model_files import HUB_KINDS, PresetFiles, Source
from engine.runtime.model_hub import PARTIAL, HubError, describe, fetch, remote_tree, storage_folder


class _Quiet(tqdm):
    """No bars from snapshot_download's bookkeeping pass (the downloads already showed theirs)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@dataclass
class PullResult:
    """What one pull did."""

    preset: str
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class RemoveResult:
    """What one rm did."""

    preset: str
    freed: int = 0
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _link(src: Source, filename: str, revision: str) -> None:
    """Let huggingface_hub link the fetched blob into the snapshot (and record refs/main)."""
    try:
        hf_hub_download(src.ref, filename, cache_dir=src.cache, revision=revision)
    except Exception as e:  # noqa: BLE001 - any hub failure is reported the same way
        raise HubError(src.ref, filename, describe(e)) from None


def _pull_file(src: Source, result: PullResult) -> None:
    name = str(src.filename)
    if src.ready:
        result.present.append(name)
        return
    blob = fetch(src.ref, name, str(src.cache))
    _link(src, name, "main")
    result.fetched.append(name)
    result.bytes += blob.stat().st_size


def _pull_repo(src: Source, result: PullResult) -> None:
    cache = str(src.cache)
    if src.anchor:
        fetch(src.ref, src.anchor, cache)  # first, so an offline pull names a real file
    commit, files = remote_tree(src.ref, src.anchor or "its file list")
    names = filter_repo_objects(
        [f.path for f in files], allow_patterns=list(src.patterns), ignore_patterns=list(src.ignore)
    )
    snap = storage_folder(cache, src.ref) / "snapshots" / commit
    for name in names:
        if (snap / name).is_file():
            result.present.append(name)
            continue
        blob = fetch(src.ref, name, cache, revision=commit)
        _link(src, name, commit)
        result.fetched.append(name)
        result.bytes += blob.stat().st_size
    try:  # records refs/main and the file list, as the engine's own snapshot_download would
        snapshot_download(
            src.ref, allow_patterns=list(src.patterns), ignore_patterns=list(src.ignore), cache_dir=cache,
            tqdm_class=_Quiet,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - any hub failure is reported the same way
        raise HubError(src.ref, "the snapshot's file list", describe(e)) from None


def _no_download(src: Source) -> str:
    what = {"demo": "built offline", "pkg": "installed with pip", "chunks": "assembled from installed chunks"}
    state = "ready" if src.ready else f"not ready ({src.note})"
    return f"{src.role} {src.ref}: {what.get(src.kind, 'a local path')}, nothing to download; {state}"


def pull(pf: PresetFiles) -> PullResult:
    """Download every hub file the preset needs; HubError (naming repo and file) on the first failure."""
    result = PullResult(pf.name)
    for src in pf.sources:
        if src.kind == "hub-file":
            _pull_file(src, result)
        elif src.kind == "hub-repo":
            _pull_repo(src, result)
        else:
            result.notes.append(_no_download(src))
    return result


def _target(link: Path) -> Path:
    """Where a snapshot symlink points (one hop: the blob, even if the blob itself is a link)."""
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def _pointers(src: Source, snapshots: Path) -> list[Path]:
    """The snapshot entries of this source, in every cached revision."""
    out: list[Path] = []
    for snap in sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []:
        if src.kind == "hub-file":
            entry = snap / str(src.filename)
            out += [entry] if entry.is_symlink() or entry.is_file() else []
            continue
        names = [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_symlink() or p.is_file()]
        kept = filter_repo_objects(names, allow_patterns=list(src.patterns), ignore_patterns=list(src.ignore))
        out += [snap / n for n in kept]
    return out


def _size(path: Path) -> int:
    return 0 if path.is_symlink() else path.stat().st_size


def _drop_blobs(storage: Path) -> int:
    """Delete blobs no snapshot points to any more, and Atelier's partial downloads; bytes freed."""
    blobs = storage / "blobs"
    if not blobs.is_dir():
        return 0
    snapshots = storage / "snapshots"
    linked = {_target(p) for p in snapshots.rglob("*") if p.is_symlink()} if snapshots.is_dir() else set()
    freed = 0
    for blob in blobs.iterdir():
        ours = PARTIAL.fullmatch(blob.name) or not blob.name.endswith(".incomplete")
        if blob in linked or not ours or blob.is_dir():
            continue
        freed += _size(blob)
        blob.unlink()
    return freed


def _prune(storage: Path, cache: Path) -> None:
    """Remove emptied folders; the whole repo folder once no snapshot file and no blob is left."""
    snapshots = storage / "snapshots"
    for d in (
        sorted((p for p in snapshots.rglob("*") if p.is_dir()), reverse=True) if snapshots.is_dir() else []
    ):
        if not any(d.iterdir()):
            d.rmdir()
    left = [p for p in storage.rglob("*") if (p.is_file() or p.is_symlink()) and p.parent.name != "refs"]
    if all(p.is_relative_to(storage / "trees") or p.is_relative_to(storage / ".no_exist") for p in left):
        shutil.rmtree(storage)
        shutil.rmtree(cache / ".locks" / storage.name, ignore_errors=True)


def remove_hub(src: Source) -> tuple[int, int]:
    """Delete one hub source's files from its cache (links, blobs, partial downloads); (files, bytes)."""
    cache = Path(str(src.cache))
    storage = storage_folder(cache, src.ref)
    if not storage.is_dir() or storage.is_symlink():
        return 0, 0
    count = freed = 0
    for entry in _pointers(src, storage / "snapshots"):
        freed += _size(entry)  # 0 for a link; a cache without symlinks holds the file itself
        entry.unlink()
        count += 1
    freed += _drop_blobs(storage)
    _prune(storage, cache)
    return count, freed


def _remove_assembled(src: Source, settings: Settings) -> tuple[int, int]:
    """The GGUF Atelier assembled from chunk packages (rebuilt on next use), and any half-written copy."""
    name = parse_chunks(src.ref, "rm")[0]
    folder = settings.path("models") / ASSEMBLED_DIR
    found = [folder / name] + list(folder.glob(f"{Path(name).stem}.part*"))
    files = [f for f in found if f.is_file() and not f.is_symlink()]
    freed = sum(f.stat().st_size for f in files)
    for f in files:
        f.unlink()
    return len(files), freed


def _users(src: Source, pf: PresetFiles, others: list[PresetFiles]) -> list[str]:
    """Other presets that are fully here (every file present) and use the same files."""
    return [
        o.name
        for o in others
        if (o.kind, o.name) != (pf.kind, pf.name)
        and all(s.ready for s in o.sources)
        and any(s.key == src.key for s in o.sources)
    ]


def remove(pf: PresetFiles, others: list[PresetFiles], settings: Settings) -> RemoveResult:
    """Delete what the preset downloaded (keeping files another present preset uses); bytes freed."""
    result = RemoveResult(pf.name)
    for src in pf.sources:
        users = _users(src, pf, others)
        if src.kind in HUB_KINDS and users:
            result.kept.append(f"{src.role} {src.ref}: also used by {', '.join(users)}")
            continue
        if src.kind in HUB_KINDS or src.kind == "chunks":
            count, freed = remove_hub(src) if src.kind in HUB_KINDS else _remove_assembled(src, settings)
            result.freed += freed
            if count:
                result.removed.append(f"{src.role} {src.ref}: {count} files")
            continue
        why = {"demo": "built offline", "pkg": "installed with pip"}.get(
            src.kind, "a local path, never deleted"
        )
        result.kept.append(f"{src.role} {src.ref}: {why}")
    return result
