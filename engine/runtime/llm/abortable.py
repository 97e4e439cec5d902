"""Abortable chat completions: stream the tokens and stop between two of them once abort() turns true.

llama-cpp-python 0.3.36's create_chat_completion takes no stopping_criteria (only create_completion does,
and the chat handlers, the Llava vision handlers included, never pass one on), and its logits processors run
inside a ctypes sampler callback that swallows exceptions, so neither can end a chat call. A streamed
completion hands control back after every sampled token in every handler, so closing the stream is the one
portable way to stop: at most the token being decoded when abort() turned true is finished. The prompt
(and image) evaluation before the first token cannot be interrupted; callers check abort() before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from engine.runtime.llm.types import GenerationAborted

Abort = Callable[[], bool]


def collect(chunks: Iterator[dict], abort: Abort, name: str) -> dict:
    """A streamed chat completion gathered into the non-streamed shape (usage counts content chunks);
    GenerationAborted as soon as abort() is true between two tokens."""
    parts: list[str] = []
    finish: str | None = None
    try:
        for chunk in chunks:
            choice = chunk["choices"][0]
            content = (choice.get("delta") or {}).get("content")
            if content:
                parts.append(content)
            finish = choice.get("finish_reason") or finish
            if finish is None and abort():
                raise GenerationAborted(
                    f"LLM preset {name!r}: stopped after {len(parts)} token(s) because other work needs the device",
                    tokens=len(parts),
                )
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # ends llama.cpp's token generator here, on this thread, under the model's lock
    return {
        "choices": [{"message": {"role": "assistant", "content": "".join(parts)}, "finish_reason": finish}],
        "usage": {"completion_tokens": len(parts)},
    }
