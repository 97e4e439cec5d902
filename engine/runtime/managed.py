"""The contract between the arbiter and every model that can live on the GPU (or in the RAM budget)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ModelNotAvailable(RuntimeError):
    """A model's files cannot be found or fetched; the message names the preset and where we looked."""


@runtime_checkable
class Managed(Protocol):
    """A model the arbiter loads, measures and evicts. Only the arbiter calls load/unload.

    load() and unload() are blocking and are always called off the event loop.
    """

    name: str
    kind: str  # "llm", "diffusion", "preprocessor", ...

    def estimate_bytes(self) -> int:
        """Footprint estimated from files/config before loading (bytes on the device)."""
        ...

    def load(self, device: str) -> None:
        """Load weights onto `device` ("cuda", "cpu", "mps"); must be idempotent."""
        ...

    def unload(self) -> None:
        """Free every byte this model holds on the device (close handles, move off, drop references)."""
        ...

    @property
    def loaded(self) -> bool:
        """True between a successful load() and the next unload()."""
        ...

    def close(self) -> None:
        """Final release at shutdown (unload and drop caches)."""
        ...
