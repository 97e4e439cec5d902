"""PipelineHolder: what DiffusionModel and VideoModel share: their pipelines on one device, behind one lock."""

from __future__ import annotations

import threading
from typing import Any


class PipelineHolder:
    """Pipelines by role ("txt2img", "base", ...) on one device; load() is idempotent per device.

    Subclasses implement _load_pipes(device) (fill self._pipes) and unload() (drop them and what they hold).
    """

    def __init__(self) -> None:
        self._pipes: dict[str, Any] = {}
        self._device = "cpu"
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        """True between load() and unload()."""
        return bool(self._pipes)

    def load(self, device: str) -> None:
        """Load onto `device` (nothing to do when already there): unload, then the subclass's _load_pipes."""
        with self._lock:
            if self._pipes and self._device == device:
                return
            self.unload()
            self._load_pipes(device)

    def _load_pipes(self, device: str) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        """Drop every pipeline reference."""
        raise NotImplementedError

    def close(self) -> None:
        """Final release at shutdown."""
        self.unload()
