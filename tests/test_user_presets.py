"""User presets without editing package data: a presets.toml next to the config, or presets in the config."""

from __future__ import annotations

import json

import pytest

from engine.config import load_settings
from engine.store import open_store
from engine.store.seed import DataFileError

USER_FILE = """
[[llm]]
name = "my-gguf"
model = "/models/mistral-7b.Q4_K_M.gguf"
mmproj = "/models/mmproj.gguf"
chat_format = "llava-1-5"
n_ctx = 8192

[[image]]
name = "sdxl"
model = "stabilityai/stable-diffusion-xl-base-1.0"
family = "sdxl"
steps = 12
"""


def write_config(tmp_path, **extra) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"paths": {"data_dir": str(tmp_path / "data")}, **extra}))
    return str(path)


async def test_a_presets_file_next_to_the_config_adds_and_overrides(tmp_path):
    (tmp_path / "presets.toml").write_text(USER_FILE)
    inline = {"image": [{"name": "house-style", "model": "/models/house", "family": "sd15", "steps": 20}]}
    settings = load_settings(write_config(tmp_path, presets=inline))
    store = await open_store(settings)
    try:
        llm = await store.presets.resolve("llm", "my-gguf")
        assert (llm["model"], llm["mmproj"], llm["n_ctx"]) == ("/models/mistral-7b.Q4_K_M.gguf", "/models/mmproj.gguf", 8192)
        assert (await store.presets.resolve("image", "sdxl"))["steps"] == 12  # the user's override wins
        assert (await store.presets.resolve("image", "house-style"))["family"] == "sd15"
        assert (await store.presets.resolve("image", "sd15"))["steps"] == 25  # shipped ones stay
    finally:
        await store.close()
    (tmp_path / "presets.toml").unlink()  # gone next start: the shipped sdxl is back, my-gguf is removed
    store = await open_store(load_settings(write_config(tmp_path)))
    try:
        assert (await store.presets.resolve("image", "sdxl"))["steps"] == 30
        names = [p["name"] for p in await store.presets.list("llm")]
        assert "my-gguf" not in names and "qwen2.5-vl-7b" in names
    finally:
        await store.close()


async def _refused(settings, message: str) -> None:
    """Opening the store fails with a DataFileError that starts with `message`."""
    with pytest.raises(DataFileError) as e:
        await open_store(settings)
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize(
    ("file_text", "message"),
    [
        ('[[llm]]\nname = "x"\n', "presets.toml: [[llm]] #1 field 'model': Field required"),
        ('[[image]]\nname = "x"\nmodel = "m"\nfamily = "sd3"\n', "presets.toml: [[image]] #1 field 'family'"),
        ("[[image]\n", "presets.toml: "),
        ('[[gpu]]\nx = 1\n', "presets.toml: unknown top-level keys ['gpu']"),
    ],
)
async def test_bad_user_presets_name_the_file_and_the_field(tmp_path, file_text, message):
    (tmp_path / "presets.toml").write_text(file_text)
    await _refused(load_settings(write_config(tmp_path)), message)


async def test_bad_presets_in_the_config_name_the_section_and_the_field(tmp_path):
    inline = {"llm": [{"name": "y", "model": "m.gguf", "n_ctx": 10}]}
    settings = load_settings(write_config(tmp_path, presets=inline))
    await _refused(settings, "config presets.llm: [[llm]] #1 field 'n_ctx'")
