"""SpareChat: an LLM ChatModel for background work, on a spare (never-evicting) arbiter lease per call."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Unpack

from engine.runtime.arbiter import Arbiter
from engine.runtime.llm.llama_model import LlamaModel
from engine.runtime.llm.types import ChatOptions, Message, Reply
from engine.runtime.spare import spare_lease

LOWEST_PRIORITY = 19  # the nice value of the background thread


def _lower_priority() -> None:
    """Executor initializer: this thread (and threads it starts) yield the CPU to everything else (Linux:
    the nice value is per thread); silently nothing where that is not supported."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)


class SpareChat:
    """achat() raises engine.runtime.spare.NoRoom when the model cannot load without evicting another or
    another model is in use, and GenerationAborted when another client appears during the call. Calls run on
    one lowest-priority thread, so even the step it cannot interrupt (the prompt) yields the CPU to users."""

    def __init__(self, arbiter: Arbiter, model: LlamaModel):
        self.arbiter = arbiter
        self.name = model.name
        self.model = model
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="spare-llm", initializer=_lower_priority)

    async def achat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """Hold the model for one (threaded) completion, if there is room for it; it stops at the next token
        once another arbiter client holds or waits for a model, or abort() is true."""
        async with spare_lease(self.arbiter, self.name) as lease:

            abort = options.get("abort")

            def stop() -> bool:
                return lease.contended() or (abort is not None and abort())

            call = functools.partial(self.model.chat, messages, schema, **{**options, "abort": stop})
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
