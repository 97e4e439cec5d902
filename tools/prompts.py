"""Load and validate the agent's data files in prompts/agent/ (system prompt, tool notes, enhance, critique)."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tools.prompt_rules import RouterFile, StepsFile, compiled

AGENT_DIR = Path(__file__).resolve().parent.parent / "prompts" / "agent"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
FILES = ("system.md", "tools.toml", "enhance.toml", "critique.toml", "agent.toml", "router.toml", "steps.toml")
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
    "stopped_repeat": {"tool"},
    "model_failed": {"error"},
    "context_too_small": {"error"},
    "tried": set(),
    "continue_hint": set(),
    "queued": {"n", "ids"},
    "generated": {"prompt", "details", "ids"},
    "found": {"n", "query"},
    "found_recent": set(),
    "found_none": {"query"},
    "found_item": {"id", "prompt", "seed"},
    "enhanced": {"family", "prompt"},
    "styled": {"style", "prompt"},
    "styled_negative": {"negative"},
    "failed": {"tool", "error"},
    "notes": {"notes"},
    "context_reply": {"id", "prompt", "seed", "preset", "style"},
    "context_attachments": {"n", "names"},
    "talk_fallback": set(),
    "explain_none": set(),
    "explain_request": {"request"},
    "explain_route": {"route", "by", "why"},
    "explain_read": {"items"},
    "explain_call": {"tool", "args", "outcome"},
    "explain_stop": {"stopped"},
}


class CheckRules(Strict):
    patterns: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...]
    wait_s: Annotated[float, Field(gt=0, le=3600)]

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return compiled(v)


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
    router: RouterFile
    steps: StepsFile

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
    router = _model(directory / "router.toml", RouterFile)
    steps = _model(directory / "steps.toml", StepsFile)
    if tool_names is not None:
        for name, check in (("router.toml", router.check_routes), ("steps.toml", steps.check_tools)):
            try:
                check(tool_names)
            except ValueError as e:
                raise PromptFileError(f"{name}: {e}") from None
    return AgentPrompts(
        system=_system(directory / "system.md"),
        tool_notes=dict(tools.notes),
        enhance=_model(directory / "enhance.toml", EnhanceFile),
        critique=_model(directory / "critique.toml", CritiqueFile),
        agent=_model(directory / "agent.toml", AgentFile),
        router=router,
        steps=steps,
    )


@cache
def shipped_prompts() -> AgentPrompts:
    """The shipped prompts/agent files (loaded once)."""
    return load_agent_prompts()
