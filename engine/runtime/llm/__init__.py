"""The LLM runtime: one narrow chat interface, a llama.cpp implementation and test doubles."""

from engine.runtime.llm.grammar import grammar_for, schema_key
from engine.runtime.llm.llama_model import LlamaModel
from engine.runtime.llm.presets import LlmPreset, make_vision_handler, parse_preset, register_vision_handler
from engine.runtime.llm.types import (
    BadAction,
    ChatModel,
    GenerationAborted,
    InvalidMessages,
    LlmError,
    Message,
    ModelNotLoaded,
    NoVisionProjector,
    Reply,
    Timings,
    validated,
)

__all__ = [
    "BadAction",
    "ChatModel",
    "GenerationAborted",
    "InvalidMessages",
    "LlamaModel",
    "LlmError",
    "LlmPreset",
    "Message",
    "ModelNotLoaded",
    "NoVisionProjector",
    "Reply",
    "Timings",
    "grammar_for",
    "make_vision_handler",
    "parse_preset",
    "register_vision_handler",
    "schema_key",
    "validated",
]
