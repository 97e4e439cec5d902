"""Test doubles: a scripted ChatModel for agent-loop tests and a stand-in vision chat handler."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

from engine.runtime.llm.messages import check_messages
from engine.runtime.llm.types import ChatOptions, GenerationAborted, Message, Reply, parse_json

ScriptItem = dict | str | Reply | Callable[[list[Message]], "dict | str | Reply"]
DEFAULT_CRITIQUE = "The composition is balanced; the subject is clear. Consider stronger contrast."


class ScriptExhausted(AssertionError):
    """A ScriptedChatModel was asked for more replies than it was given."""


class ScriptedChatModel:
    """Replies from a script, in order: dicts (JSON actions), strings, Replies, or callables(messages)."""

    def __init__(self, replies: list[ScriptItem]) -> None:
        self._script = list(replies)
        self._lock = threading.Lock()
        self.calls: list[list[Message]] = []
        self.schemas: list[dict | None] = []

    @property
    def remaining(self) -> int:
        """Replies not used yet."""
        return len(self._script)

    def chat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """Record the messages and return the next scripted reply (shape and image URLs are checked);
        GenerationAborted, using no reply, when abort() is already true."""
        check_messages(messages)
        abort = options.get("abort")
        if abort is not None and abort():
            raise GenerationAborted("scripted model: aborted before the prompt")
        with self._lock:
            self.calls.append(copy.deepcopy(messages))
            self.schemas.append(schema)
            if not self._script:
                last = json.dumps(messages[-1], default=str)[:200]
                raise ScriptExhausted(
                    f"ScriptedChatModel ran out of replies at call {len(self.calls)}; last: {last}"
                )
            item = self._script.pop(0)
        if callable(item) and not isinstance(item, Reply):
            item = item(copy.deepcopy(messages))
        return _as_reply(item, schema is not None)

    async def achat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """chat() in a worker thread, like the real model."""
        return await asyncio.to_thread(functools.partial(self.chat, messages, schema, **options))


class SteppedChatModel(ScriptedChatModel):
    """Always `reply`, after `tokens` fake tokens per call, checking abort() before each one as the abortable
    llama.cpp path does; `on_step(call, token)` runs in the worker thread first (to pause or act there)."""

    def __init__(
        self, reply: dict, tokens: int = 20, on_step: Callable[[int, int], None] | None = None
    ) -> None:
        super().__init__([])
        self.reply = reply
        self.tokens = tokens
        self.on_step = on_step
        self.generated: list[int] = []  # tokens generated, per call

    def chat(self, messages: list[Message], schema: dict | None = None, **kw: Any) -> Reply:
        """Step through the tokens; GenerationAborted at the first step where kw["abort"]() is true."""
        check_messages(messages)
        abort = kw.get("abort")
        call = len(self.generated)
        self.generated.append(0)
        for token in range(self.tokens):
            if self.on_step is not None:
                self.on_step(call, token)
            if abort is not None and abort():
                raise GenerationAborted(f"stepped model: stopped after {token} token(s)", tokens=token)
            self.generated[call] = token + 1
        return _as_reply(self.reply, schema is not None)


def _as_reply(item: Any, structured: bool) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, dict):
        return Reply(text=json.dumps(item), data=copy.deepcopy(item) if structured else None)
    if isinstance(item, str):
        return Reply(text=item, data=parse_json(item) if structured else None)
    raise TypeError(f"script items must be dict, str, Reply or callable, got {type(item).__name__}")


class VisionHandlerDouble:
    """A llama-cpp chat handler stand-in: records the image data URIs it got and returns a canned critique."""

    def __init__(
        self,
        clip_model_path: str,
        verbose: bool = False,
        critique: str | Callable[[list], str] = DEFAULT_CRITIQUE,
    ) -> None:
        if not Path(clip_model_path).exists():
            raise ValueError(f"Clip model path does not exist: {clip_model_path}")  # as the real handlers do
        self.clip_model_path = clip_model_path
        self.critique = critique
        self.calls: list[dict] = []

    @property
    def image_urls(self) -> list[str]:
        """Every image URL received, across calls."""
        return [u for call in self.calls for u in call["image_urls"]]

    def __call__(self, *, llama: Any, messages: list[Message], **kwargs: Any) -> dict:
        """Handler protocol: receives the Llama and the messages exactly as create_chat_completion passes them."""
        urls, texts = [], []
        for msg in messages:
            content = msg.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
            for part in parts:
                if part.get("type") == "image_url":
                    url = part["image_url"]
                    urls.append(url["url"] if isinstance(url, dict) else url)
                elif part.get("type") == "text":
                    texts.append(part["text"])
        self.calls.append(
            {"llama": llama, "messages": copy.deepcopy(messages), "image_urls": urls, "kwargs": kwargs}
        )
        text = self.critique(messages) if callable(self.critique) else self.critique
        n_prompt = len(llama.tokenize("\n".join(texts).encode("utf-8"))) if llama is not None else 0
        return {
            "id": f"chatcmpl-double-{len(self.calls)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "vision-handler-double",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": 0, "total_tokens": n_prompt},
        }
