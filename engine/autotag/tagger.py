"""AutoTagger: a background loop that tags new images with the vision model while no user job waits or runs.

Priority: before every image it checks that the runner has no running job and the queue no queued one, and
the vision model is used on a spare arbiter lease (engine/runtime/spare.py): it never evicts a user's model.
The vision call itself is abortable (engine/runtime/llm/abortable.py): between two tokens it stops as soon as
the runner holds a job (Busy.now(), read from the model's thread), another arbiter client takes or waits for
a model (the spare lease), the queue polled every WATCH_POLL_S has work (jobs from other processes), or
stop() was called. So a user's job waits at most one step of the tagger (one token, or the uninterruptible
prompt/image evaluation of a call that had already started). An aborted generation is left pending, not
failed, and is tagged again from its first image at the next idle moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Protocol, Unpack

from pydantic import BaseModel, ConfigDict, Field

from engine.autotag.normalize import normalize_all
from engine.config import Settings
from engine.images import decode_image, image_limits, to_data_uri
from engine.runtime.llm import GenerationAborted, LlmError, NoVisionProjector, validated
from engine.runtime.llm.types import ChatOptions, Message, Reply
from engine.runtime.spare import NoRoom
from engine.store import Store
from engine.store.history import Generation

log = logging.getLogger("atelier.autotag")
TAG_PATTERN = "^[a-z][a-z -]{1,30}$"
TAG_MAX_TOKENS = 160
IMAGE_MAX_SIDE = 448
# While an image is tagged: how often the queue is asked (the runner and the arbiter are checked per token).
WATCH_POLL_S = 0.25
INSTRUCTIONS = (
    "List what is in this image as short lowercase tags: the subject, objects, setting, colours, style, "
    "lighting and mood. One to three words per tag."
)


class Busy(Protocol):
    """Whether user work waits or runs: the full check may ask the queue; now() is cheap and thread-safe."""

    async def __call__(self) -> bool: ...

    def now(self) -> bool: ...


class VisionChat(Protocol):
    async def achat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply: ...


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


class RunnerBusy:
    """Busy: a job runs on `runner` (now(): the runner's claimed jobs), or one is queued or running in `jobs`."""

    def __init__(self, runner: Any, jobs: Any) -> None:
        self.runner = runner
        self.jobs = jobs

    def now(self) -> bool:
        """A job is claimed by this process's runner (reading a dict's size is safe from any thread)."""
        return bool(self.runner.active)

    async def __call__(self) -> bool:
        if self.now():
            return True
        counts = await self.jobs.counts()
        return counts.get("queued", 0) > 0 or counts.get("running", 0) > 0


def runner_busy(runner: Any, jobs: Any) -> RunnerBusy:
    """The Busy check of a runner and its job store."""
    return RunnerBusy(runner, jobs)


class AutoTagger:
    """Tags untagged generations, newest first, one image per idle moment."""

    def __init__(self, store: Store, vision: VisionChat, settings: Settings, busy: Busy) -> None:
        self.store = store
        self.vision = vision
        self.settings = settings
        self.busy = busy
        self.tagged_images = 0
        self.yielded = 0  # times it stopped because user work appeared
        self.aborted = 0  # of those, vision calls stopped mid-way
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    def _image_uri(self, path: str) -> str:
        p = Path(path)
        if not p.is_absolute():
            p = self.settings.path("outputs") / p
        limits = image_limits(self.settings.images)
        return to_data_uri(decode_image(p.read_bytes(), **limits), max_side=IMAGE_MAX_SIDE)

    async def tag_image(self, path: str) -> list[str]:
        """Normalized tags of one image file (LlmError when the model's answer is unusable, GenerationAborted
        when user work appeared during the call)."""
        uri = await asyncio.to_thread(self._image_uri, path)
        messages: list[Message] = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": [
                {"type": "text", "text": "Tag this image."}, {"type": "image_url", "image_url": {"url": uri}},
            ]},
        ]  # fmt: skip
        limit = self.settings.autotag.max_tags
        user_work = threading.Event()  # set by the queue watcher; read per token with the cheap checks

        def abort() -> bool:
            return user_work.is_set() or self._stop.is_set() or self.busy.now()

        watcher = asyncio.get_running_loop().create_task(self._watch(user_work))
        try:
            schema = tags_schema(limit)
            reply = await self.vision.achat(messages, schema, max_tokens=TAG_MAX_TOKENS, abort=abort)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        tags = normalize_all(validated(reply, TagsOut).tags, limit)
        if not tags:
            raise LlmError("the vision model gave no usable tag")
        return tags

    async def _watch(self, user_work: threading.Event) -> None:
        """Ask the full busy check every WATCH_POLL_S while a call runs; set `user_work` when it says yes."""
        while True:
            await asyncio.sleep(WATCH_POLL_S)
            try:
                if await self.busy():
                    user_work.set()
                    return
            except Exception:
                log.warning("auto-tagging could not check the queue", exc_info=True)

    async def tag_generation(self, g: Generation) -> bool:
        """Tag every image of `g`; False (nothing stored, still pending) when user work appeared, before or
        during an image, or the model had no room."""
        per_image: list[list[str]] = []
        for path in g.images:
            if await self.busy():
                self.yielded += 1
                return False
            try:
                per_image.append(await self.tag_image(path))
            except GenerationAborted:  # user work appeared during the call
                self.yielded += 1
                self.aborted += 1
                return False
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
        """Stop the loop; a vision call in progress stops at its next token."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
