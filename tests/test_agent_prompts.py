"""Every data file under prompts/agent/ loads and validates; broken or unknown files are rejected."""

from __future__ import annotations

import shutil

import pytest

from tools import prompts as agent_prompts
from tools.whitelist import REGISTRY


def test_every_shipped_agent_prompt_file_loads():
    loaded = agent_prompts.load_agent_prompts(tool_names=REGISTRY.names)
    files = sorted(p.name for p in agent_prompts.AGENT_DIR.iterdir())
    assert files == sorted(agent_prompts.FILES)
    assert set(loaded.tool_notes) == set(REGISTRY.names)
    assert loaded.message("stopped_steps", n=3).startswith("I stopped after 3 tool calls")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("system.md", "{tools}", "{tool_list}", "unknown placeholders \\['tool_list'\\]"),
        ("agent.toml", "{n} tool calls", "{count} tool calls", "stopped_steps: unknown placeholders"),
        ("enhance.toml", "[family.flux]", "[family.flux2]", "rules missing for families \\['flux'\\]"),
        ("tools.toml", "critique =", "delete_history =", "not whitelisted: \\['delete_history'\\]"),
        ("agent.toml", '"\\\\bverify\\\\b"', '"(unclosed"', "bad regular expression"),
        ("router.toml", 'route = "search_history"', 'route = "delete_history"', "unknown route 'delete_history'"),
        ("router.toml", '"^\\\\s*/?imagine\\\\b"', '"(unclosed"', "bad regular expression"),
        ("router.toml", '"16:9" = [', '"21:9" = [', "unknown aspect ratios"),
        ("steps.toml", "fill.critique", "fill.critic", "one step per tool"),
        ("steps.toml", 'answer = "reply"', 'answer = "chat"', "answer must be one of"),
    ],
)
def test_broken_agent_prompt_files_are_rejected(tmp_path, file, old, new, message):
    copy = tmp_path / "agent"
    shutil.copytree(agent_prompts.AGENT_DIR, copy)
    text = (copy / file).read_text()
    assert old in text
    (copy / file).write_text(text.replace(old, new))
    with pytest.raises(agent_prompts.PromptFileError, match=message):
        agent_prompts.load_agent_prompts(copy, tool_names=REGISTRY.names)


def test_router_aliases_and_fill_examples_match_the_library_and_the_tools():
    from engine.store.seed import load_shipped

    loaded = agent_prompts.load_agent_prompts(tool_names=REGISTRY.names)
    styles = {e.label for e in load_shipped()["style"]}
    assert set(loaded.router.extract.style_aliases.values()) <= styles
    for tool, step in loaded.steps.fill.items():
        params = {p.name for p in REGISTRY.get(tool).params}
        for ex in step.example:
            assert set(ex.answer) <= params, (tool, ex.answer)


def test_unknown_file_in_agent_prompts_is_rejected(tmp_path):
    copy = tmp_path / "agent"
    shutil.copytree(agent_prompts.AGENT_DIR, copy)
    (copy / "extra.md").write_text("hi")
    with pytest.raises(agent_prompts.PromptFileError, match="unknown files"):
        agent_prompts.load_agent_prompts(copy)
