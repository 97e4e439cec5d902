"""SpareChat: an LLM ChatModel for background work, on a spare (never-evicting) arbiter lease per call."""

from __future__ import annotations

from engine.runtime.arbiter import Arbiter
from engine.runtime.llm.llama_model import LlamaModel
from engine.runtime.llm.types import Message, Reply
from engine.runtime.spare import spare_lease


class SpareChat:
    """achat() raises engine.runtime.spare.NoRoom when the model cannot load without evicting another."""

    def __init__(self, arbiter: Arbiter, model: LlamaModel):
        self.arbiter = arbiter
        self.name = model.name
        self.model = model

    async def achat(
        self, messages: list[Message], schema: dict | None = None, *, max_tokens: int | None = None
    ) -> Reply:
        """Hold the model for one (threaded) completion, if there is room for it."""
        async with spare_lease(self.arbiter, self.name) as model:
            return await model.achat(messages, schema, max_tokens=max_tokens)
