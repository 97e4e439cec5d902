"""The context budget, in the model's own tokens: what one model call may send so the answer still fits.

prompt (system + few-shot + history + notes + request) + max_tokens <= n_ctx. When it does not fit: drop the
oldest history first, then shorten the notes (tool results), then cut the request itself; the system prompt and
the few-shot examples are kept. A call that cannot fit even then is refused before it reaches the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.runtime.llm.types import Message

Counter = Callable[[list[Message]], int]
NOTE_CHARS = 240  # a shortened note keeps this many characters
REQUEST_MIN_CHARS = 200
CUT = " …(cut)"


class ContextTooSmall(ValueError):
    """Even the system prompt and a cut request do not fit the model's context window."""


@dataclass
class Prompt:
    """One model call's messages in parts: fixed head, droppable history, shortenable notes, the request."""

    head: list[Message]
    request: str
    history: list[Message] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped: int = 0  # history messages dropped to fit
    shortened: int = 0  # notes shortened to fit

    def messages(self) -> list[Message]:
        """The messages as sent: head, history, then the request with its notes."""
        text = self.request if not self.notes else self.request + "\n\n" + "\n".join(self.notes)
        return [*self.head, *self.history, {"role": "user", "content": text}]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(CUT))] + CUT


def fit(prompt: Prompt, count: Counter, limit: int) -> tuple[list[Message], int]:
    """(messages, their token count) within `limit` tokens; ContextTooSmall when impossible."""
    used = count(prompt.messages())
    while used > limit and prompt.history:
        prompt.history.pop(0)
        prompt.dropped += 1
        used = count(prompt.messages())
    i = 0
    while used > limit and i < len(prompt.notes):
        if len(prompt.notes[i]) > NOTE_CHARS:
            prompt.notes[i] = _cut(prompt.notes[i], NOTE_CHARS)
            prompt.shortened += 1
            used = count(prompt.messages())
        i += 1
    while used > limit and prompt.notes:
        prompt.notes.pop(0)
        prompt.shortened += 1
        used = count(prompt.messages())
    while used > limit and len(prompt.request) > REQUEST_MIN_CHARS:
        prompt.request = _cut(prompt.request, max(REQUEST_MIN_CHARS, len(prompt.request) // 2))
        used = count(prompt.messages())
    if used > limit:
        raise ContextTooSmall(
            f"this request needs {used} tokens of context but the model allows {limit} for the prompt"
        )
    return prompt.messages(), used


def approx_count(messages: list[Message]) -> int:
    """A rough token count (4 characters a token, plus 4 per message) for models without a tokenizer."""
    total = 0
    for m in messages:
        content = m.get("content")
        text = content if isinstance(content, str) else " ".join(
            p.get("text", "") for p in content or [] if isinstance(p, dict)
        )
        total += len(text) // 4 + 4
    return total + 2
