"""The seed-aware result cache of 'generate' jobs: a content hash of the fully resolved request.

The key covers the preset (its whole stored definition: model, family, LoRAs, defaults), the prompt, negative
and style as drawn, every generation field (steps, cfg, scheduler, size, batch, seed, strength, safety policy,
LoRAs, controls, reference) and a digest of every input image's pixels. Only a job whose seed the requester
gave (payload `seed_fixed`, set by JobSubmitter) may be answered from the cache; a hit records its own history
row that points at the stored images and says `cached: true` in its params.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from engine.config import Settings
from engine.jobs.payloads import GeneratePayload
from engine.jobs.record import result_of
from engine.store import Store
from engine.store.jobs import Job

log = logging.getLogger("atelier.cache")
KEY_VERSION = 1
_NOT_KEYED = ("controls", "reference")  # recorded in extra with per-job paths; keyed through the fields


class Plan(Protocol):
    """What the key reads of engine.jobs.handlers.Plan."""

    preset: dict[str, Any]
    prompt: str
    negative: str
    style: str
    fields: dict[str, Any]
    aspect: str | None
    extra: dict[str, Any]
    post: Callable[..., Any] | None


def image_digest(image: Any) -> str:
    """sha256 of a PIL image's mode, size and pixels."""
    h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def normalize(value: Any) -> Any:
    """A JSON-safe, order-independent form of a request value; images become pixel digests."""
    if hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):
        return {"image": image_digest(value)}
    if isinstance(value, BaseModel):
        return {k: normalize(getattr(value, k)) for k in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: normalize(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    if value is None or isinstance(value, str | int | bool):
        return value
    return repr(value)


def request_key(plan: Plan, best_of: int | None) -> str:
    """The content hash of a resolved 'generate' plan."""
    extra = {k: v for k, v in plan.extra.items() if k not in _NOT_KEYED}
    data = {
        "v": KEY_VERSION,
        "preset": plan.preset,
        "prompt": plan.prompt,
        "negative": plan.negative,
        "style": plan.style,
        "aspect": plan.aspect,
        "fields": {k: v for k, v in plan.fields.items() if v is not None},
        "extra": extra,
        "best_of": best_of,
        "post": plan.post is not None,
    }
    blob = json.dumps(normalize(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class JobCache:
    """Looks a resolved plan up before rendering and remembers each complete result after."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def hit(
        self, job: Job, p: GeneratePayload, plan: Plan, user: Mapping[str, object]
    ) -> tuple[str, dict | None]:
        """(key, the cached result recorded for this job) — the result is None on a miss. `user`: their settings."""
        key = request_key(plan, p.best_of)
        if not p.seed_fixed or not self.settings.cache.enabled or user.get("cache", True) is False:
            return key, None
        g = await self.store.cache.find(key, self.settings.cache.ttl_s)
        if g is None:
            return key, None
        if not all(os.path.exists(path) for path in g.images):
            await self.store.cache.drop(key)
            return key, None
        params = {**g.params, "cached": True, "cached_from": g.id, "kind": job.kind, "job_id": job.id}
        row: dict[str, Any] = {
            "user_id": job.user_id, "guild_id": job.guild_id, "channel_id": job.channel_id, "prompt": g.prompt,
            "negative": g.negative, "params": params, "seed": g.seed, "model": g.model, "preset": g.preset,
            "style": g.style, "parent_id": g.parent_id, "images": list(g.images),
        }  # fmt: skip
        gen_id, _ = await self.store.history.record_for_job(job.id, row)
        log.info("job %s answered from the cache (generation %s)", job.id, g.id)
        return key, result_of(gen_id, row).model_dump()

    def keeper(
        self, key: str | None, params: Mapping[str, object]
    ) -> Callable[[sqlite3.Connection, int], None] | None:
        """The step that remembers a fresh result under its key as its history row is written (None: nothing to
        keep: no key, the cache off, images withheld, or the result came from the cache)."""
        if key is None or not self.settings.cache.enabled or params.get("withheld") or params.get("cached"):
            return None
        return self.store.cache.entry(key, self.settings.cache.max_entries)
