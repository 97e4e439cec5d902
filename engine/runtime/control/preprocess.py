"""Control-image preprocessors (controlnet-aux detectors) as arbiter-managed models.

Weights come from a local folder (`<annotators>` as a path, or `models_dir/<annotators>`), the Hugging Face
cache, or - when allowed and the hub answers a quick probe - a download. controlnet-aux itself is only ever
given local files, so it never touches the network. softedge uses HED (not PiDiNet): ControlNet 1.1's softedge
model was trained on HED maps and the same ControlNetHED.pth also serves scribble, so two types share one file.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from PIL import Image, ImageFilter

from engine.runtime.control import CONTROL_TYPES
from engine.runtime.diffusion.errors import GenerationFailed, InvalidRequest
from engine.runtime.managed import ModelNotAvailable

log = logging.getLogger("atelier.engine")
DEFAULT_ANNOTATORS = "lllyasviel/Annotators"
MIB = 1024 * 1024
PROBE_TIMEOUT_S = 3.0
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048
MAX_DETECT_SIDE = 2048  # long side the detector may see (very wide images get a lower detect resolution)
BINARY_THRESHOLD = 96  # line maps are re-binarised at this level after resizing back
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class _Spec:
    """What one control type needs: weight files (with rough sizes), a builder and call arguments."""

    files: tuple[str, ...]
    approx_bytes: int  # weights + working memory at 512 px, used before the files exist locally
    build: Callable[[list[Path]], Any]
    call: dict[str, Any] = field(default_factory=dict)
    binary: bool = False  # a line map: re-binarised after resizing back so thin lines stay crisp


def _aux() -> Any:
    """Import controlnet_aux quietly (it warns about mediapipe, timm renames and registry overwrites)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import controlnet_aux

    return controlnet_aux


def _build_canny(_files: list[Path]) -> Any:
    return _aux().CannyDetector()


def _build_depth(files: list[Path]) -> Any:
    aux = _aux()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # an absolute filename wins over the folder in os.path.join, so each file may live anywhere
        return aux.MidasDetector.from_pretrained(str(files[0].parent), filename=str(files[0]))


def _build_openpose(files: list[Path]) -> Any:
    _aux()
    from controlnet_aux.open_pose import Body, OpenposeDetector

    return OpenposeDetector(Body(str(files[0])))  # body only: hands and face stay off (and unloaded)


def _build_lineart(files: list[Path]) -> Any:
    return _aux().LineartDetector.from_pretrained(
        str(files[0].parent), filename=str(files[0]), coarse_filename=str(files[1])
    )


def _build_hed(files: list[Path]) -> Any:
    return _aux().HEDdetector.from_pretrained(str(files[0].parent), filename=str(files[0]))


SPECS: dict[str, _Spec] = {
    "canny": _Spec((), 0, _build_canny, {"low_threshold": 100, "high_threshold": 200}, binary=True),
    "depth": _Spec(("dpt_hybrid-midas-501f0c75.pt",), 900 * MIB, _build_depth),
    "openpose": _Spec(
        ("body_pose_model.pth",),
        500 * MIB,
        _build_openpose,
        {"include_body": True, "include_hand": False, "include_face": False},
    ),
    "lineart": _Spec(("sk_model.pth", "sk_model2.pth"), 300 * MIB, _build_lineart, {"coarse": False}),
    "softedge": _Spec(("ControlNetHED.pth",), 400 * MIB, _build_hed, {"safe": False, "scribble": False}),
    "scribble": _Spec(
        ("ControlNetHED.pth",), 400 * MIB, _build_hed, {"safe": False, "scribble": True}, binary=True
    ),
}
WORKSPACE_BYTES = 256 * MIB  # activations at 512 px on top of the weights, for weighted detectors


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set now (read at call time) or huggingface_hub was imported offline."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached (offline flag, DNS or connect failure within timeout_s), or None."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy decides reachability; let huggingface_hub try
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"cannot connect to {host}:{port} ({e})")

    thread = threading.Thread(target=probe, daemon=True, name="hf-probe")  # DNS has no timeout of its own
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout_s:.0f} s"


class Preprocessor:
    """One controlnet-aux detector (canny, depth, openpose, lineart, softedge or scribble) as a Managed model."""

    kind = "preprocessor"

    def __init__(
        self,
        kind: str,
        models_dir: Path | None,
        annotators: str = DEFAULT_ANNOTATORS,
        name: str | None = None,
        *,
        download: bool = True,
        cache_dir: Path | None = None,
    ) -> None:
        if kind not in SPECS:
            raise InvalidRequest(f"unknown preprocessor '{kind}'; choose one of: {', '.join(CONTROL_TYPES)}")
        self.control_type = kind
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.annotators = annotators
        self.name = name or f"preprocess-{kind}"
        self.download = download
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.spec = SPECS[kind]
        self._detector: Any = None
        self._device: str | None = None

    def __repr__(self) -> str:
        return f"Preprocessor({self.control_type!r}, name={self.name!r}, loaded={self.loaded})"

    # --- where the weights are -------------------------------------------------------------------------------
    def _folders(self) -> list[Path]:
        """Local folders that may hold the annotator files directly."""
        ref = Path(self.annotators).expanduser()
        folders = [ref]
        if self.models_dir is not None and not ref.is_absolute():
            folders.append(self.models_dir / ref)
        return folders

    def _cached(self, filename: str) -> Path | None:
        """The file from a local folder or the hub cache, without any network."""
        for folder in self._folders():
            if (folder / filename).is_file():
                return folder / filename
        import huggingface_hub as hf

        for cache in dict.fromkeys([self.cache_dir, None]):
            try:
                hit = hf.try_to_load_from_cache(self.annotators, filename, cache_dir=cache)
            except Exception:  # noqa: BLE001 - an annotators path is not a valid repo id
                hit = None
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
        return None

    def _missing(self, filename: str, why: str) -> ModelNotAvailable:
        folders = " or ".join(str(f) for f in self._folders())
        return ModelNotAvailable(
            f"the {self.control_type} preprocessor needs {filename} from {self.annotators}: it is not in "
            f"{folders} nor in the Hugging Face cache, and {why}"
        )

    def _fetch(self, filename: str) -> Path:
        """A local path for one weight file: folder, cache, then (if allowed and reachable) a download."""
        hit = self._cached(filename)
        if hit is not None:
            return hit
        if not self.download:
            raise self._missing(filename, "downloads are disabled")
        reason = hub_unreachable()
        if reason is not None:
            raise self._missing(filename, f"the hub is unreachable: {reason}")
        import huggingface_hub as hf

        log.info(
            "downloading %s from %s for the %s preprocessor", filename, self.annotators, self.control_type
        )
        cache = str(self.cache_dir) if self.cache_dir else None
        try:
            return Path(hf.hf_hub_download(self.annotators, filename, cache_dir=cache))
        except Exception as e:  # noqa: BLE001 - 404, auth, network: all mean "not available"
            raise self._missing(filename, f"the download failed: {type(e).__name__}: {e}") from None

    def weight_files(self) -> list[Path]:
        """Local paths of every weight file this detector needs (fetching them when allowed)."""
        return [self._fetch(f) for f in self.spec.files]

    # --- Managed --------------------------------------------------------------------------------------------
    def estimate_bytes(self) -> int:
        """0 for canny; else local file sizes + working memory, or a rough figure before the files exist."""
        if not self.spec.files:
            return 0
        found = [self._cached(f) for f in self.spec.files]
        if any(p is None for p in found):
            return self.spec.approx_bytes
        return sum(p.stat().st_size for p in found if p is not None) + WORKSPACE_BYTES

    @property
    def loaded(self) -> bool:
        """True between load() and unload()."""
        return self._detector is not None

    def load(self, device: str) -> None:
        """Build the detector from local weights and move its torch modules to `device` (idempotent)."""
        if self._detector is not None and self._device == device:
            return
        self.unload()
        files = self.weight_files()
        try:
            detector = self.spec.build(files)
        except Exception as e:  # noqa: BLE001 - a corrupt or mismatched file
            where = ", ".join(str(f) for f in files)
            raise ModelNotAvailable(
                f"the {self.control_type} preprocessor could not load {where}: {type(e).__name__}: {e}"
            ) from e
        for module in _modules(detector):
            module.to(device)
        self._detector, self._device = detector, device

    def unload(self) -> None:
        """Drop the detector (the arbiter then collects garbage and empties the device cache)."""
        if self._detector is None:
            return
        self._detector, self._device = None, None
        gc.collect()

    def close(self) -> None:
        """Final release."""
        self.unload()

    # --- work -----------------------------------------------------------------------------------------------
    def run(self, image: Image.Image, resolution: int = 512) -> Image.Image:
        """The RGB control map for `image`, the same size as `image` (blocking; call it from a thread)."""
        detector = self._detector
        if detector is None:
            raise GenerationFailed(
                f"preprocessor {self.name} is not loaded; use it through the arbiter (arbiter.use)"
            )
        if not isinstance(image, Image.Image):
            raise InvalidRequest(f"a control image must be a PIL image, got {type(image).__name__}")
        if min(image.size) < 8:
            raise InvalidRequest(
                f"a control image must be at least 8x8 pixels, got {image.size[0]}x{image.size[1]}"
            )
        if isinstance(resolution, bool) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise InvalidRequest(
                f"preprocess resolution must be {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {resolution!r}"
            )
        src = image.convert("RGB")
        res = _detect_resolution(src.size, int(resolution))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = detector(
                src, detect_resolution=res, image_resolution=res, output_type="pil", **self.spec.call
            )
        log.debug("%s preprocessed %sx%s in %.2f s", self.name, *src.size, time.perf_counter() - start)
        return _fit_back(out.convert("RGB"), src.size, self.spec.binary)


def _fit_back(out: Image.Image, size: tuple[int, int], binary: bool) -> Image.Image:
    """Resize a control map to `size`; line maps are dilated before shrinking and re-binarised after."""
    if out.size == size:
        return out
    shrink = max(out.width / size[0], out.height / size[1])
    if binary and shrink > 1:
        out = out.filter(ImageFilter.MaxFilter(math.ceil(shrink) // 2 * 2 + 1))  # keep 1-px lines
    out = out.resize(size, Image.Resampling.BILINEAR)
    return out.point(lambda v: 255 if v >= BINARY_THRESHOLD else 0) if binary else out


def _detect_resolution(size: tuple[int, int], resolution: int) -> int:
    """Short-side resolution for the detector, lowered so the long side stays within MAX_DETECT_SIDE."""
    short, long = min(size), max(size)
    return max(MIN_RESOLUTION, min(resolution, int(MAX_DETECT_SIDE * short / long)))


def _modules(detector: Any) -> list[Any]:
    """The torch modules a detector holds (none for canny)."""
    found = []
    for attr in ("netNetwork", "model", "model_coarse"):
        module = getattr(detector, attr, None)
        if module is not None and hasattr(module, "to"):
            found.append(module)
    body = getattr(detector, "body_estimation", None)
    if body is not None:
        found.append(body.model)
    return found
