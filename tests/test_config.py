"""Settings: defaults parse, every bad key is named, secrets only from the environment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import REPO_CONFIG, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_shipped_config_matches_model_defaults():
    shipped = load_settings(REPO_CONFIG)
    assert shipped.model_dump(exclude={"base_dir"}) == Settings().model_dump(exclude={"base_dir"})


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"queue": {"max_per_user": "two"}}, ["'queue.max_per_user'", "expected int"]),
        ({"gpu": {"vram": 3}}, ["unknown key 'gpu.vram'"]),
        ({"generation": {"safety": "maybe"}}, ["'generation.safety'", "'block', 'spoiler', 'off'"]),
        ({"history": {"page_size": 0}}, ["'history.page_size'", "greater than or equal to 1"]),
        ({"gpu": {"vram_budget_mb": "lots"}}, ["'gpu.vram_budget_mb'", "int or null"]),
        ({"discord": {"token": "abc"}}, ["unknown key 'discord.token'"]),
        ({"paths": []}, ["'paths'", "expected object"]),
        ({"agent": {"max_tool_calls": 99}}, ["'agent.max_tool_calls'", "less than or equal to 16"]),
    ],
)
def test_bad_values_name_the_key_and_type(tmp_path, data, needles):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, data))
    for needle in needles:
        assert needle in str(err.value)


def test_several_errors_are_all_reported(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, {"queue": {"max_attempts": -1}, "nope": 1}))
    text = str(err.value)
    assert "'queue.max_attempts'" in text and "unknown key 'nope'" in text


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON at line 1"):
        load_settings(write(tmp_path, "{nope"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.json")


def test_env_var_selects_file_and_relative_paths_follow_it(tmp_path, monkeypatch):
    p = write(tmp_path, {"paths": {"data_dir": "store"}, "queue": {"max_per_user": 5}})
    monkeypatch.setenv("ATELIER_CONFIG", str(p))
    s = load_settings()
    assert s.queue.max_per_user == 5
    assert s.path("db") == tmp_path / "store" / "atelier.db"


def test_token_comes_only_from_environment(tmp_path, monkeypatch):
    s = load_settings(write(tmp_path, {}))
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert s.discord_token is None
    monkeypatch.setenv("DISCORD_TOKEN", "secret-from-env")
    assert s.discord_token == "secret-from-env"
    assert "secret-from-env" not in s.model_dump_json()


def test_cli_reports_config_error_naming_key(tmp_path):
    p = write(tmp_path, {"queue": {"backend": "kafka"}})
    out = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(p), "db", "stats"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "'queue.backend'" in out.stderr and "'local', 'redis'" in out.stderr
