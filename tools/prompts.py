"""Load and validate the agent's data files in prompts/agent/ (system prompt, tool notes, enhance, critique)."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

AGENT_DIR = Path(__file__).resolve().parent.parent / "prompts" / "agent"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
FILES = ("system.md", "tools.toml", "enhance.toml", "critique.toml", "agent.toml")
Text = Annotated[str, Field(min_length=1, max_length=4000)]


class PromptFileError(ValueError):
    """A file under prompts/agent/ that does not load; the message names the file and the key."""


def placeholders(template: str) -> set[str]:
    """The {name} placeholders of a template (JSON braces such as {"a": 1} are not placeholders)."""
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, **values: object) -> str:
    """Replace {name} placeholders; every placeholder must be given a value."""
    missing = placeholders(template) - set(values)
    if missing:
        raise KeyError(f"template needs values for {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def _check(template: str, allowed: set[str], required: set[str] | None = None) -> str:
    found = placeholders(template)
    if found - allowed:
        raise ValueError(f"unknown placeholders {sorted(found - allowed)}; allowed: {sorted(allowed)}")
    if required and required - found:
        raise ValueError(f"missing placeholders {sorted(required - found)}")
    return template


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FamilyRules(Strict):
    guidance: Text
    fallback_suffix: tuple[Annotated[str, Field(min_length=1, max_length=120)], ...]


class EnhanceFile(Strict):
    instructions: Text
    family: dict[str, FamilyRules]

    @field_validator("instructions")
    @classmethod
    def _instr(cls, v: str) -> str:
        return _check(v, {"family", "guidance"}, {"guidance"})

    @field_validator("family")
    @classmethod
    def _families(cls, v: dict[str, FamilyRules]) -> dict[str, FamilyRules]:
        missing = {"sd15", "sdxl", "flux"} - set(v)
        if missing:
            raise ValueError(f"rules missing for families {sorted(missing)}")
        return v


class CritiqueFile(Strict):
    instructions: Text
    unknown_prompt: Text
    default_focus: Text

    @field_validator("instructions")
    @classmethod
    def _instr(cls, v: str) -> str:
        return _check(v, {"prompt", "focus"}, {"prompt", "focus"})


MESSAGE_FIELDS: dict[str, set[str]] = {
    "stopped_steps": {"n"},
    "stopped_time": {"seconds"},
    "model_failed": {"error"},
    "queued": {"n", "ids"},
    "context_reply": {"id", "prompt", "seed", "preset", "style"},
    "context_attachments": {"n", "names"},
    "check_result": {"job_id"},
    "tool_result": {"tool", "result"},
}


class CheckRules(Strict):
    patterns: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...]
    wait_s: Annotated[float, Field(gt=0, le=3600)]

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"bad regular expression {p!r}: {e}") from None
        return v


class AgentFile(Strict):
    messages: dict[str, Text]
    check: CheckRules
    follow_ups: dict[str, tuple[Annotated[str, Field(min_length=1, max_length=100)], ...]]

    @field_validator("messages")
    @classmethod
    def _messages(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) != set(MESSAGE_FIELDS):
            raise ValueError(f"messages must be exactly {sorted(MESSAGE_FIELDS)}; got {sorted(v)}")
        for key, text in v.items():
            try:
                _check(text, MESSAGE_FIELDS[key])
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
        return v


class ToolsFile(Strict):
    notes: dict[str, Annotated[str, Field(min_length=1, max_length=500)]]


class AgentPrompts(Strict):
    """Everything in prompts/agent/, validated."""

    system: str
    tool_notes: dict[str, str]
    enhance: EnhanceFile
    critique: CritiqueFile
    agent: AgentFile

    def message(self, key: str, **values: object) -> str:
        """One user-facing message with its placeholders filled."""
        return fill(self.agent.messages[key], **values)


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptFileError(f"{path.name}: missing (expected in {path.parent})") from None
    except tomllib.TOMLDecodeError as e:
        raise PromptFileError(f"{path.name}: {e}") from None


def _model(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(_toml(path))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise PromptFileError(f"{path.name}: '{where}': {first['msg']}") from None


def _system(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"{path.name}: missing (expected in {path.parent})") from None
    try:
        return _check(text, {"tools", "styles", "presets", "aspects"}, {"tools"})
    except ValueError as e:
        raise PromptFileError(f"{path.name}: {e}") from None


def load_agent_prompts(
    directory: Path = AGENT_DIR, tool_names: tuple[str, ...] | None = None
) -> AgentPrompts:
    """Load every file in prompts/agent/; unknown files, keys, placeholders or tool names are errors."""
    unknown = sorted(
        p.name for p in directory.iterdir() if p.name not in FILES and not p.name.startswith(".")
    )
    if unknown:
        raise PromptFileError(f"unknown files in {directory}: {unknown} (known: {', '.join(FILES)})")
    tools = _model(directory / "tools.toml", ToolsFile)
    if tool_names is not None and set(tools.notes) - set(tool_names):
        bad = sorted(set(tools.notes) - set(tool_names))
        raise PromptFileError(f"tools.toml: notes for tools that are not whitelisted: {bad}")
    return AgentPrompts(
        system=_system(directory / "system.md"),
        tool_notes=dict(tools.notes),
        enhance=_model(directory / "enhance.toml", EnhanceFile),
        critique=_model(directory / "critique.toml", CritiqueFile),
        agent=_model(directory / "agent.toml", AgentFile),
    )


@cache
def shipped_prompts() -> AgentPrompts:
    """The shipped prompts/agent files (loaded once)."""
    return load_agent_prompts()
