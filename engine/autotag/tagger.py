"""AutoTagger: a background loop that tags new images with the vision model while no user job waits or runs.

Priority: before every image it checks that the runner has no running job and the queue no queued one, and
the vision model is used on a spare arbiter lease (engine/runtime/spare.py): it never evicts a user's model.
A user job that arrives while an image is being tagged waits at most for that one image (one vision call);
the rest of that generation is left for the next idle moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from engine.autotag.normalize import normalize_all
from engine.config import Settings
from engine.images import decode_image, image_limits, to_data_uri
from engine.runtime.llm import LlmError, NoVisionProjector, validated
from engine.runtime.llm.types import Message, Reply
from engine.runtime.spare import NoRoom
from engine.store import Store
from engine.store.history import Generation

log = logging.getLogger("atelier.autotag")
TAG_PATTERN = "^[a-z][a-z -]{1,30}$"
TAG_MAX_TOKENS = 160
IMAGE_MAX_SIDE = 448
INSTRUCTIONS = (
    "List what is in this image as short lowercase tags: the subject, objects, setting, colours, style, "
    "lighting and mood. One to three words per tag."
)
Busy = Callable[[], Awaitable[bool]]


class VisionChat(Protocol):
    async def achat(
        self, messages: list[Message], schema: dict | None = None, *, max_tokens: int | None = None
    ) -> Reply: ...


class TagsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(min_length=1, max_length=24)


def tags_schema(n: int) -> dict:
    """Up to `n` short lowercase tags."""
    item = {"type": "string", "pattern": TAG_PATTERN}
    return {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": item, "minItems": 1, "maxItems": n}},
        "required": ["tags"],
        "additionalProperties": False,
    }


def runner_busy(runner: Any, jobs: Any) -> Busy:
    """A Busy check: a job runs on `runner`, or one is queued in `jobs`."""

    async def busy() -> bool:
        if runner.active:
            return True
        counts = await jobs.counts()
        return counts.get("queued", 0) > 0 or counts.get("running", 0) > 0

    return busy


class AutoTagger:
    """Tags untagged generations, newest first, one image per idle moment."""

    def __init__(self, store: Store, vision: VisionChat, settings: Settings, busy: Busy) -> None:
        self.store = store
        self.vision = vision
        self.settings = settings
        self.busy = busy
        self.tagged_images = 0
        self.yielded = 0  # times it stopped because user work appeared
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    def _image_uri(self, path: str) -> str:
        p = Path(path)
        if not p.is_absolute():
            p = self.settings.path("outputs") / p
        limits = image_limits(self.settings.images)
        return to_data_uri(decode_image(p.read_bytes(), **limits), max_side=IMAGE_MAX_SIDE)

    async def tag_image(self, path: str) -> list[str]:
        """Normalized tags of one image file (LlmError when the model's answer is unusable)."""
        uri = await asyncio.to_thread(self._image_uri, path)
        messages: list[Message] = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": [
                {"type": "text", "text": "Tag this image."}, {"type": "image_url", "image_url": {"url": uri}},
            ]},
        ]  # fmt: skip
        limit = self.settings.autotag.max_tags
        reply = await self.vision.achat(messages, tags_schema(limit), max_tokens=TAG_MAX_TOKENS)
        tags = normalize_all(validated(reply, TagsOut).tags, limit)
        if not tags:
            raise LlmError("the vision model gave no usable tag")
        return tags

    async def tag_generation(self, g: Generation) -> bool:
        """Tag every image of `g`; False (nothing stored) when user work appeared or the model had no room."""
        per_image: list[list[str]] = []
        for path in g.images:
            if await self.busy():
                self.yielded += 1
                return False
            try:
                per_image.append(await self.tag_image(path))
            except NoRoom:
                return False
            except NoVisionProjector:
                raise
            except (OSError, ValueError, LlmError) as e:  # a missing or unreadable file, an unusable answer
                log.warning("auto-tagging generation %s failed: %s", g.id, e)
                await self.store.tags.mark_failed(g.id)
                return True
            self.tagged_images += 1
        await self.store.tags.set_tags(g.id, per_image)
        return True

    async def tag_once(self) -> bool:
        """Tag the newest untagged generation if the GPU is idle; True when one was handled."""
        if await self.busy():
            return False
        pending = await self.store.tags.pending(1)
        return bool(pending) and await self.tag_generation(pending[0])

    def start(self) -> AutoTagger:
        """Run the loop in the background until stop()."""
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = await self.tag_once()
            except NoVisionProjector:
                log.warning("auto-tagging is off: the vision preset has no projector")
                return
            except Exception:
                log.exception("auto-tagging failed; trying again later")
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.settings.autotag.idle_poll_s)

    async def stop(self) -> None:
        """Stop after the image in progress."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
