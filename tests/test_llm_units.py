"""engine.runtime.llm pieces that need no model: message checks, validation, the scripted fake, presets, GGUF header."""

from __future__ import annotations

import asyncio
import io
import struct
from typing import Literal

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from engine.images import to_data_uri
from engine.runtime.llm import (
    BadAction,
    ChatModel,
    InvalidMessages,
    LlamaModel,
    ModelNotLoaded,
    NoVisionProjector,
    Reply,
    parse_preset,
    schema_key,
    validated,
)
from engine.runtime.llm.gguf import estimate_llm_bytes, kv_bytes_per_token, read_metadata
from engine.runtime.llm.messages import check_messages, prepare_images, require_vision
from engine.runtime.managed import Managed, ModelNotAvailable
from tests.llm_fakes import ScriptedChatModel, ScriptExhausted


def image_msg(url: str, text: str = "critique this") -> dict:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
    }


class Generate(BaseModel):
    tool: Literal["generate"]
    steps: int = Field(ge=1, le=80)


def test_non_data_urls_rejected():
    for url in ("http://169.254.169.254/latest", "file:///etc/passwd", "https://x.test/a.png"):
        with pytest.raises(InvalidMessages, match="only data: URIs"):
            check_messages([image_msg(url)])


def test_message_shape_errors_are_specific():
    with pytest.raises(InvalidMessages, match="non-empty list"):
        check_messages([])
    with pytest.raises(InvalidMessages, match="message 0: needs a role"):
        check_messages([{"role": "wizard", "content": "hi"}])
    with pytest.raises(InvalidMessages, match="content must be a string"):
        check_messages([{"role": "user", "content": 5}])
    with pytest.raises(InvalidMessages, match="only accepted in user messages"):
        check_messages([{**image_msg("data:image/png;base64,AA=="), "role": "assistant"}])
    assert check_messages([{"role": "system", "content": "s"}, image_msg("data:image/png;base64,AA==")]) == 1


def test_prepare_images_reencodes_and_rejects_bad_images():
    src = Image.new("RGB", (1000, 500), (200, 10, 10))
    buf = io.BytesIO()
    src.save(buf, format="JPEG")
    original = to_data_uri(src, fmt="JPEG", max_side=2000)
    out = prepare_images([image_msg(original)], limits={}, max_side=256)
    url = out[0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and url != original
    with pytest.raises(InvalidMessages, match="message 0 part 1: not an image"):
        prepare_images([image_msg("data:image/png;base64,AAAAAAAA")], limits={}, max_side=256)
    joined = prepare_images(
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        limits={},
        max_side=8,
    )
    assert joined[0]["content"] == "a\nb"


def test_require_vision_message():
    with pytest.raises(NoVisionProjector, match="this LLM preset has no vision projector"):
        require_vision(1, False, "smol")
    require_vision(0, False, "smol")
    require_vision(2, True, "vlm")


def test_validated_raises_bad_action_with_pydantic_message():
    ok = validated(
        Reply(text='{"tool":"generate","steps":4}', data={"tool": "generate", "steps": 4}), Generate
    )
    assert ok.steps == 4
    with pytest.raises(BadAction, match=r"steps: Input should be less than or equal to 80") as e:
        validated(
            Reply(text='{"tool":"generate","steps":999}', data={"tool": "generate", "steps": 999}), Generate
        )
    assert e.value.text == '{"tool":"generate","steps":999}'
    with pytest.raises(BadAction, match="not valid JSON"):
        validated(Reply(text='{"tool": "gen'), Generate)


async def test_scripted_model_replies_records_and_runs_out():
    seen = []
    fake = ScriptedChatModel(
        [
            {"tool": "reply", "text": "hi"},
            lambda msgs: seen.append(msgs[-1]["content"]) or "plain text",
            Reply(text="done"),
        ]
    )
    assert isinstance(fake, ChatModel)
    r1 = fake.chat([{"role": "user", "content": "one"}], schema={"type": "object"})
    assert r1.data == {"tool": "reply", "text": "hi"}
    r2 = await fake.achat([{"role": "user", "content": "two"}])
    assert r2.text == "plain text" and r2.data is None and seen == ["two"]
    assert fake.chat([{"role": "user", "content": "three"}]).text == "done"
    assert [c[-1]["content"] for c in fake.calls] == ["one", "two", "three"]
    assert fake.schemas == [{"type": "object"}, None, None]
    with pytest.raises(ScriptExhausted, match="ran out of replies at call 4"):
        fake.chat([{"role": "user", "content": "four"}])


def test_scripted_model_string_with_schema_must_be_json():
    fake = ScriptedChatModel(["not json"])
    with pytest.raises(BadAction, match="not valid JSON"):
        fake.chat([{"role": "user", "content": "x"}], schema={"type": "object"})


def test_scripted_model_checks_image_urls():
    fake = ScriptedChatModel(["never"])
    with pytest.raises(InvalidMessages, match="only data: URIs"):
        fake.chat([image_msg("http://example.com/x.png")])
    assert fake.remaining == 1


def test_preset_errors_name_the_preset_and_key():
    with pytest.raises(ValueError, match=r"LLM preset 'p': n_ctxx: Extra inputs are not permitted"):
        parse_preset({"name": "p", "model": "m.gguf", "n_ctxx": 5})
    with pytest.raises(ValueError, match=r"LLM preset 'v': unknown vision chat_format 'llava-9'"):
        parse_preset({"name": "v", "model": "m.gguf", "mmproj": "p.gguf", "chat_format": "llava-9"})
    assert parse_preset({"name": "v", "model": "m.gguf", "mmproj": "p.gguf"}).handler_name == "mtmd"
    assert parse_preset({"name": "t", "model": "m.gguf", "chat_format": "chatml"}).handler_name is None


def test_missing_files_raise_model_not_available(tmp_path):
    model = LlamaModel({"name": "ghost", "model": "nope.gguf"}, models_dir=tmp_path)
    assert isinstance(model, Managed) and model.kind == "llm"
    with pytest.raises(ModelNotAvailable, match=r"LLM preset 'ghost': model file not found: .*nope.gguf"):
        model.estimate_bytes()
    with pytest.raises(ModelNotAvailable, match="ghost"):
        model.load("cpu")
    assert not model.loaded
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    vlm = LlamaModel({"name": "vlm", "model": "m.gguf", "mmproj": "proj.gguf"}, models_dir=tmp_path)
    with pytest.raises(ModelNotAvailable, match=r"LLM preset 'vlm': mmproj file not found"):
        vlm.load("cpu")


def test_chat_before_load_validates_first_then_refuses(tmp_path):
    model = LlamaModel({"name": "cold", "model": "m.gguf"}, models_dir=tmp_path)
    with pytest.raises(InvalidMessages, match="only data: URIs"):
        model.chat([image_msg("http://example.com/a.png")])
    with pytest.raises(NoVisionProjector):
        model.chat([image_msg(to_data_uri(Image.new("RGB", (8, 8))))])
    with pytest.raises(ModelNotLoaded, match="'cold' is not loaded"):
        model.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ModelNotLoaded):
        asyncio.run(model.achat([{"role": "user", "content": "hi"}]))


def _gguf_bytes(kv: dict) -> bytes:
    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x)) + x.encode()

    body = b""
    for k, v in kv.items():
        if isinstance(v, str):
            body += s(k) + struct.pack("<I", 8) + s(v)
        elif isinstance(v, list):
            body += s(k) + struct.pack("<IIQ", 9, 8, len(v)) + b"".join(s(t) for t in v)
        else:
            body += s(k) + struct.pack("<II", 4, v)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + body


def test_gguf_header_and_kv_estimate(tmp_path):
    meta_in = {
        "general.architecture": "llama",
        "llama.block_count": 4,
        "llama.embedding_length": 256,
        "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 2,
        "tokenizer.ggml.tokens": ["a", "b", "c"],
    }
    path = tmp_path / "tiny.gguf"
    path.write_bytes(_gguf_bytes(meta_in))
    meta = read_metadata(path)
    assert meta["llama.block_count"] == 4 and meta["tokenizer.ggml.tokens"] == 3
    per_token = kv_bytes_per_token(meta)
    assert per_token == 4 * 2 * (32 + 32) * 2
    small, big = estimate_llm_bytes(1000, meta, 1024), estimate_llm_bytes(1000, meta, 2048)
    assert big - small == 1024 * per_token


def test_schema_key_ignores_key_order():
    assert schema_key({"a": 1, "b": {"c": 2, "d": 3}}) == schema_key({"b": {"d": 3, "c": 2}, "a": 1})
    assert schema_key({"a": 1}) != schema_key({"a": 2})


def test_hub_presets_download_only_on_load(tmp_path, monkeypatch):
    import huggingface_hub as hf

    from engine.runtime.llm.presets import resolve_file

    calls = []
    monkeypatch.setattr(hf, "try_to_load_from_cache", lambda repo, name, cache_dir=None: None)
    monkeypatch.setattr(hf, "hf_hub_url", lambda repo, name: f"https://hub.test/{repo}/{name}")
    monkeypatch.setattr(hf, "get_hf_file_metadata", lambda url: type("Meta", (), {"size": 123_000_000})())

    def fake_download(repo, name, cache_dir=None):
        calls.append((repo, name, cache_dir))
        return str(tmp_path / name)

    monkeypatch.setattr(hf, "hf_hub_download", fake_download)
    preset = parse_preset({"name": "hub", "repo": "org/model-GGUF", "model": "m.Q4.gguf"})
    model = LlamaModel(preset, models_dir=tmp_path)
    assert model.estimate_bytes() > 123_000_000 and calls == []
    assert resolve_file(preset, "m.Q4.gguf", tmp_path, download=True, what="model") == tmp_path / "m.Q4.gguf"
    assert calls == [("org/model-GGUF", "m.Q4.gguf", str(tmp_path))]

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(hf, "hf_hub_download", offline)
    with pytest.raises(
        ModelNotAvailable, match=r"LLM preset 'hub': cannot fetch m.Q4.gguf from org/model-GGUF"
    ):
        model.load("cpu")
