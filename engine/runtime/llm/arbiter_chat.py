"""ArbiterChat: the narrow ChatModel interface over an arbiter-managed LlamaModel (a lease per call)."""

from __future__ import annotations

from typing import Any, Unpack

from engine.runtime.arbiter import Arbiter
from engine.runtime.llm.llama_model import LlamaModel
from engine.runtime.llm.types import ChatOptions, Message, Reply


class ArbiterChat:
    """A ChatModel that holds the arbiter's lease on an LLM for each call (the arbiter loads/evicts it)."""

    def __init__(self, arbiter: Arbiter, model: LlamaModel):
        self.arbiter = arbiter
        self.name = model.name
        self.model = model  # the registered LlamaModel, for token counts (no lease needed)

    @property
    def n_ctx(self) -> int:
        """The model's context window."""
        return int(self.model.n_ctx)

    def count_tokens(self, messages: list[Message]) -> int:
        """Tokens the messages take, with the model's tokenizer."""
        return int(self.model.count_tokens(messages))

    def chat(self, *args: Any, **kwargs: Any) -> Reply:
        """Blocking chat is not offered here: the front runs on an event loop."""
        raise RuntimeError("ArbiterChat is async only; use achat()")

    async def achat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """Hold the model loaded for one (threaded) completion."""
        async with self.arbiter.use(self.name) as model:
            return await model.achat(messages, schema, **options)
