"""JSON schema -> llama.cpp grammar, compiled once per distinct schema."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

_CACHE: OrderedDict[str, Any] = OrderedDict()
_LOCK = threading.Lock()
MAX_CACHED = 64


def schema_key(schema: dict) -> str:
    """A stable hash of a JSON schema (key order does not matter)."""
    canon = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


# llama.cpp's schema converter nests one rule per allowed character: maxLength >= ~200 segfaults the process
# (150 worked, 200 crashed, seen here). Longer limits are dropped from the grammar; callers re-validate.
GRAMMAR_MAX_LENGTH = 128


def grammar_safe(schema: Any, limit: int = GRAMMAR_MAX_LENGTH) -> Any:
    """A copy of a JSON schema without maxLength above `limit` (safe for the llama.cpp grammar parser)."""
    if isinstance(schema, dict):
        return {
            k: grammar_safe(v, limit)
            for k, v in schema.items()
            if not (k == "maxLength" and isinstance(v, int) and v > limit)
        }
    if isinstance(schema, list):
        return [grammar_safe(v, limit) for v in schema]
    return schema


def grammar_for(schema: dict) -> Any:
    """The LlamaGrammar for a schema, from the cache when it was compiled before."""
    if not isinstance(schema, dict):
        raise TypeError(f"schema must be a dict, not {type(schema).__name__}")
    key = schema_key(schema)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    from llama_cpp import LlamaGrammar

    try:
        grammar = LlamaGrammar.from_json_schema(json.dumps(grammar_safe(schema)), verbose=False)
    except Exception as e:  # the converter raises assorted errors on schemas it cannot handle
        raise ValueError(f"this JSON schema cannot be compiled to a grammar: {e}") from None
    with _LOCK:
        _CACHE[key] = grammar
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
    return grammar


def cached_count() -> int:
    """How many compiled grammars are cached (for tests and metrics)."""
    with _LOCK:
        return len(_CACHE)
