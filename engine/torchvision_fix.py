"""Make `import torchvision` work when its compiled ops cannot load (a CPU torch beside a CUDA torchvision wheel).

torchvision is meant to import without its C++ ops (`extension._has_ops()` is then False), but 0.2x registers
fake kernels for `torchvision::nms` / `qnms` at import time, which fails when those operators were never
defined. controlnet-aux (every detector) and transformers' fast image processors import torchvision, so one
such machine could not preprocess a control image or load a CLIP image processor. When the extension
cannot load, we define the two operator schemas (no kernels) before torchvision is imported; calling them
still fails with torchvision's own clear "Couldn't load custom C++ ops" error. When the extension loads
(a matching torchvision build, e.g. on a CUDA machine) nothing is changed.

`install()` adds an import hook, so torch is only imported when something imports torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger("atelier.engine")
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_state: dict[str, object] = {}


def _extension_loads(spec: importlib.machinery.ModuleSpec) -> bool:
    import torch

    for folder in spec.submodule_search_locations or []:
        for lib in sorted(Path(folder).glob("_C*.so")) + sorted(Path(folder).glob("_C*.pyd")):
            try:
                torch.ops.load_library(str(lib))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def prepare() -> bool:
    """Define the missing operator schemas if torchvision's ops cannot load; True when it did so."""
    if "patched" in _state:
        return bool(_state["patched"])
    _state["patched"] = False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or _extension_loads(spec):
        return False
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        if not hasattr_op(name):
            lib.define(schema)
    _state["lib"] = lib  # keep the definitions alive
    _state["patched"] = True
    log.info("torchvision's compiled ops cannot load here; its pure-Python parts are usable")
    return True


def hasattr_op(name: str) -> bool:
    """True when the operator torchvision::<name> already exists."""
    import torch

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


class _Hook(importlib.abc.MetaPathFinder):
    """Runs prepare() just before the first `import torchvision`, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        if fullname == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Hook)]
            try:
                prepare()
            except Exception:  # noqa: BLE001 - never break an import because of this fix
                log.exception("could not prepare torchvision")
        return None


def install() -> None:
    """Install the import hook once (no-op when torchvision is already imported)."""
    if "torchvision" in sys.modules or any(isinstance(f, _Hook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Hook())
