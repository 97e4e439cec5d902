"""What one agent turn produced (the fronts render it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.orchestrator import ToolCall


@dataclass
class AgentResult:
    """What a turn produced. `reply` is raw text: the front must send it with mentions disabled."""

    reply: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)
    stopped: str | None = None  # max_tool_calls, max_wall_s, repeat, model_error or context
    decisions: int = 0  # model calls made
    route: str = ""
    decided_by: str = ""  # "rules" or "model"
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prompt_tokens: int = 0  # prompt tokens evaluated by the model in this turn
    turn_id: int | None = None
    why: str = ""
    read_from: dict[str, str] = field(default_factory=dict)
