"""Settings documentation: every field described, `atelier config` output, the README table in sync."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.cli import main
from bot.config_cmd import END, START, readme_block, redact, write_readme
from engine.config import Settings
from engine.config_doc import key_docs, nested_models, readme_table, type_label

ROOT = Path(__file__).resolve().parent.parent


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """`model` and every pydantic model reachable from its fields' annotations."""
    seen.add(model)
    for field in model.model_fields.values():
        for sub in nested_models(field.annotation):
            if sub not in seen:
                _models(sub, seen)
    return seen


def test_every_field_and_section_is_described():
    models = _models(Settings, set())
    assert len(models) >= 14  # Settings, its 12 sections and IpAdapter
    for model in models:
        assert (model.__doc__ or "").strip(), f"{model.__name__} has no docstring"
        for name, field in model.model_fields.items():
            assert (field.description or "").strip(), f"{model.__name__}.{name} has no description"
            assert "\n" not in field.description, f"{model.__name__}.{name}: keep descriptions on one line"


def test_key_docs_cover_every_default_key():
    keys = {d.key for d in key_docs()}
    for section, values in Settings().model_dump().items():
        assert {f"{section}.{k}" for k in values} <= keys
    assert "control.ip_adapter.*.image_encoder" in keys and "base_dir" not in keys


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("generation.max_batch", "int 1-4"),
        ("gpu.vram_budget_mb", "int >0 or null"),
        ("gpu.device", "auto/cuda/cpu/mps"),
        ("queue.batch_window_ms", "int >=0"),
        ("images.formats", "list of str"),
    ],
)
def test_type_labels(key, label):
    section, name = key.split(".")
    field = Settings.model_fields[section].annotation.model_fields[name]
    assert type_label(field.annotation, field.metadata) == label


def test_explain_lists_keys_with_descriptions(capsys):
    assert main(["config", "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if x.startswith("queue.max_per_user "))
    description = Settings.model_fields["queue"].annotation.model_fields["max_per_user"].description
    assert line.split() == ["queue.max_per_user", "int", ">0", "2", *description.split()]
    starts = {x.index(d.description) for x, d in zip(lines, key_docs(), strict=True)}
    assert len(starts) == 1, "the description column is aligned"


def test_explain_json_is_valid(capsys):
    assert main(["config", "--explain", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_key = {r["key"]: r for r in rows}
    assert by_key["queue.max_per_user"]["default"] == 2
    assert by_key["gpu.vram_budget_mb"]["default"] is None
    assert all(set(r) >= {"key", "type", "default", "description"} and r["description"] for r in rows)


def test_show_prints_merged_settings_without_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "secret-from-env")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"queue": {"max_per_user": 5, "redis_url": "redis://:hunter2@db:6379/0"}}))
    assert main(["--config", str(cfg), "config", "--show"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["queue"]["max_per_user"] == 5 and shown["gpu"]["reserve_mb"] == 1024
    assert shown["queue"]["redis_url"] == "redis://:***@db:6379/0"
    assert "secret-from-env" not in out and "hunter2" not in out and "base_dir" not in shown


def test_redact_keeps_urls_without_passwords():
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact({"a": ["redis://me:pw@h/1"]}) == {"a": ["redis://me:***@h/1"]}


def test_readme_table_matches_the_model():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_block(text) == readme_table(), (
        "README.md's configuration table is out of date: run `python -m bot.config_cmd --write-readme`"
        f" (or paste the output of `atelier config --readme` between {START} and {END})"
    )


def test_write_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{START}\nstale\n{END}\nafter\n", encoding="utf-8")
    assert write_readme(readme) is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert readme_block(text) == readme_table() and write_readme(readme) is False


def test_module_prints_the_readme_table():
    out = subprocess.run(
        [sys.executable, "-m", "bot.config_cmd", "--readme"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and out.stdout.strip() == readme_table()
