"""Saved prompt-prefix states, so the agent's step prompts stay warm across conversations.

llama.cpp keeps one KV cache: it reuses the prompt that was evaluated last, so a turn whose step prompt
(system prompt + few-shot examples) differs from the previous call's evaluates it all again. Each step kind
has its own prompt, and turns of different users interleave, so that happens on most turns. PrefixStates
keeps the KV state of recent prompts (llama.cpp's per-sequence state, no logits) keyed by their tokens; before
a prompt is evaluated, the state sharing its longest prefix is restored when that beats what the live
cache already shares, and only the rest is evaluated.
"""

from __future__ import annotations

import ctypes
import functools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MIN_GAIN_TOKENS = 16  # restoring a state costs a copy; below this many extra shared tokens it is not worth it
MAX_ENTRIES = 16  # a few per step kind: choose, one fill per tool, reply


@dataclass(frozen=True)
class SavedState:
    """The tokens of sequence 0 and llama.cpp's state data for them."""

    tokens: tuple[int, ...]
    data: bytes


class PrefixStates:
    """Recent prompt states, least recently used dropped first, within a byte budget."""

    def __init__(self, capacity_bytes: int, max_entries: int = MAX_ENTRIES) -> None:
        self.capacity_bytes = capacity_bytes
        self.max_entries = max_entries
        self._states: OrderedDict[tuple[int, ...], SavedState] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def size_bytes(self) -> int:
        """Bytes held by the saved states."""
        return sum(len(s.data) for s in self._states.values())

    def best(self, tokens: Sequence[int]) -> tuple[SavedState, int] | None:
        """The saved state sharing the longest prefix with `tokens`, and that length (None when none shares any)."""
        from llama_cpp import Llama

        found, length = None, 0
        for state in self._states.values():
            n = Llama.longest_token_prefix(state.tokens, tokens)
            if n > length:
                found, length = state, n
        if found is None:
            return None
        self._states.move_to_end(found.tokens)
        return found, length

    def put(self, state: SavedState) -> None:
        """Keep `state`; states whose tokens it extends are dropped (it holds all they held)."""
        if len(state.data) > self.capacity_bytes:
            return
        for key in [k for k in self._states if state.tokens[: len(k)] == k]:
            del self._states[key]
        self._states[state.tokens] = state
        while len(self._states) > self.max_entries or self.size_bytes > self.capacity_bytes:
            self._states.popitem(last=False)

    def clear(self) -> None:
        """Forget every state (the model was unloaded: they belong to its context)."""
        self._states.clear()


def save_state(llama: Any) -> SavedState:
    """The live context's sequence 0 (its KV cells, no logits) and the tokens in it."""
    import llama_cpp

    ctx = llama._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
    return SavedState(tuple(llama._input_ids.tolist()), ctypes.string_at(buf, written))  # the live tokens


def restore_state(llama: Any, state: SavedState) -> bool:
    """Replace the live KV cache with `state`; False (the cache left empty) when llama.cpp refuses it."""
    import llama_cpp

    llama._ctx.kv_cache_clear()
    llama.n_tokens = 0
    buf = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
    if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buf, len(state.data), 0) != len(state.data):
        llama._ctx.kv_cache_clear()
        return False
    n = len(state.tokens)
    llama.input_ids[:n] = state.tokens
    llama.n_tokens = n
    llama._requires_eval = True  # the restored cache has no logits: the suffix (or one token) is decoded again
    return True


def restore_best(llama: Any, states: PrefixStates, tokens: Sequence[int]) -> None:
    """Restore the saved state that shares more of `tokens` than the live cache does (by MIN_GAIN_TOKENS)."""
    found = states.best(tokens)
    if found is None:
        return
    state, shared = found
    live = llama.longest_token_prefix(llama._input_ids, tokens)
    if shared - live >= MIN_GAIN_TOKENS and restore_state(llama, state):
        states.hits += 1


@functools.cache
def prefix_llama_class() -> type:
    """llama_cpp.Llama whose generate() first restores the best saved prefix state (when `prefix_states` is set)."""
    from llama_cpp import Llama

    class PrefixLlama(Llama):
        """Llama with a hook before each prompt evaluation; `prefix_states` None = plain Llama."""

        prefix_states: PrefixStates | None = None

        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            if self.prefix_states is not None and kwargs.get("reset", True):
                restore_best(self, self.prefix_states, list(tokens))
            yield from super().generate(tokens, *args, **kwargs)

    return PrefixLlama
