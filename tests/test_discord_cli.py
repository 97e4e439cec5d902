"""`atelier run` fails fast, with a clear message, without a token or without its models."""

from __future__ import annotations

import json
import logging

import pytest

from bot.cli import main


@pytest.fixture(autouse=True)
def root_logging():
    """`atelier run` installs discord.py's handler on the root logger; later tests must not log to capsys' stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _config(tmp_path) -> str:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"paths": {"data_dir": str(tmp_path / "data")}, "metrics": {"enabled": False}})
    )
    return str(path)


def test_run_without_token_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main(["--config", _config(tmp_path), "run"]) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN is not set" in err and "atelier chat --demo" in err


def test_run_with_a_missing_model_names_it_before_connecting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", "not-used")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing is downloaded
    assert main(["--config", _config(tmp_path), "run"]) == 2
    err = capsys.readouterr().err
    assert "a model is missing" in err and "stabilityai/stable-diffusion-xl-base-1.0" in err
    # exactly which pulls to run (the default image and LLM presets), and the offline alternative
    assert "`atelier models pull sdxl`" in err and "`atelier models pull qwen2.5-vl-7b`" in err
    assert "--demo" in err
