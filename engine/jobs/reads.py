"""What a submission read for its checks, handed with its job to the local runner when that runner takes the job in
the same transaction that queues it (engine.jobs.submit): the handler then need not read the same rows again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.store.library import Saved


@dataclass(frozen=True)
class Reads:
    """The requester's settings and the image presets (by name) a submission read just before its job was taken."""

    stored: Saved
    presets: Mapping[str, dict] = field(default_factory=dict)
