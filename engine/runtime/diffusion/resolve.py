"""Where a model's files live: a local path, or a Hugging Face hub id fetched with its own progress bars."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.runtime.diffusion.errors import ModelNotAvailable

log = logging.getLogger("atelier.engine")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
# Rough fp16 footprints used before a hub model is downloaded.
FAMILY_BYTES: dict[str, int] = {"sd15": 2_200_000_000, "sdxl": 7_000_000_000, "flux": 24_000_000_000,
                                "kontext": 24_000_000_000, "qwen-edit": 58_000_000_000, "qwen-edit-plus": 58_000_000_000,
                                "klein": 16_000_000_000}
# A diffusers folder: configs at the root, weights in component subfolders (root single-file checkpoints skipped).
PIPELINE_PATTERNS = ["*.json", "**/*.json", "**/*.txt", "**/*.model", "**/*.safetensors"]
ADAPTER_PATTERNS = ("*.json", "*.safetensors")  # a MotionAdapter repo: config + weights at its root
_IGNORE = ["*.fp16.*", "*non_ema*", "*.ckpt", "*.msgpack", "*.onnx*", "*.h5"]


def looks_like_path(ref: str) -> bool:
    """True when `ref` is clearly a filesystem path rather than an "org/name" hub id."""
    return (
        ref.startswith(("/", "./", "../", "~", "\\"))
        or ref.count("/") > 1
        or ref.lower().endswith(WEIGHT_SUFFIXES)
        or (len(ref) > 1 and ref[1] == ":")
    )


def resolve_model(
    ref: str,
    who: str,
    models_dir: Path | None = None,
    download: bool = True,
    patterns: list[str] | None = None,
) -> Path:
    """Return a local path for `ref` (path or hub id); download hub ids when allowed.

    Raises ModelNotAvailable naming `who` (the preset) and every place we looked.
    """
    candidates = [Path(ref).expanduser()]
    if models_dir is not None and not Path(ref).is_absolute():
        candidates.append(Path(models_dir) / ref)
    for c in candidates:
        if c.exists():
            return c
    if looks_like_path(ref):
        where = " or ".join(str(c) for c in candidates)
        raise ModelNotAvailable(f"{who}: model files not found at {where}")
    return _from_hub(ref, who, download, patterns or PIPELINE_PATTERNS)


def _from_hub(repo_id: str, who: str, download: bool, patterns: list[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with diffusers
        raise ModelNotAvailable(f"{who}: cannot fetch '{repo_id}': huggingface_hub is not installed") from e
    try:
        return Path(
            snapshot_download(
                repo_id, allow_patterns=patterns, ignore_patterns=_IGNORE, local_files_only=True
            )
        )
    except Exception:  # noqa: BLE001 - not cached yet; try the network below
        if not download:
            raise ModelNotAvailable(f"{who}: '{repo_id}' is not in the local hub cache") from None
    log.info("downloading %s for preset %s from the Hugging Face hub", repo_id, who)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, ignore_patterns=_IGNORE))
    except Exception as e:  # noqa: BLE001 - every hub failure means the same thing to the user
        raise ModelNotAvailable(
            f"{who}: '{repo_id}' is neither a local path nor reachable on the Hugging Face hub ({type(e).__name__}: {e})"
        ) from e


def safetensors_bytes(path: Path, itemsize: int | None = None) -> int:
    """Bytes of a .safetensors file's tensors, re-counted at `itemsize` bytes per float element when given."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    total = 0
    for key, t in header.items():
        if key == "__metadata__":
            continue
        start, end = t["data_offsets"]
        if itemsize and t["dtype"] in ("F32", "F16", "BF16", "F64"):
            numel = 1
            for d in t["shape"]:
                numel *= d
            total += numel * itemsize
        else:
            total += end - start
    return total


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for f in sorted(path.rglob("*")):
        if not f.is_file() or not f.name.endswith(WEIGHT_SUFFIXES):
            continue
        if ".fp16." in f.name or "non_ema" in f.name:
            continue
        if f.suffix != ".safetensors" and any(f.parent.glob("*.safetensors")):
            continue
        files.append(f)
    return files


def weights_bytes(path: Path, itemsize: int | None = None) -> int:
    """Bytes of the weights we would load from `path` (file or diffusers folder), at `itemsize` when given."""
    total = 0
    for f in _weight_files(Path(path)):
        if f.suffix == ".safetensors":
            total += safetensors_bytes(f, itemsize)
        else:
            total += f.stat().st_size // (4 // itemsize if itemsize in (1, 2) else 1)
    return total
