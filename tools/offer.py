"""Which tools and arguments a request is offered, decided from its context (never by the model).

- critique, describe and generate's image arguments (strength, control, reference, outpaint, edit), only when an image is
  attached or replied to; critique also when the request is about the user's latest image;
- search_history (and generate's source_generation_id) only when the request points at earlier images;
- generate, enhance_prompt and apply_style always.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

IMAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "generate": (
        "strength",
        "control",
        "control_scale",
        "control_generation_id",
        "reference",
        "reference_scale",
        "reference_generation_id",
        "outpaint",
        "outpaint_factor",
        "edit",
    ),
}
PAST_PARAMS: dict[str, tuple[str, ...]] = {"generate": ("source_generation_id",)}
ALWAYS = ("generate", "enhance_prompt", "apply_style")


@dataclass(frozen=True)
class Offer:
    """The tools offered for one request and, per tool, the arguments that are not."""

    tools: tuple[str, ...]
    hidden: Mapping[str, frozenset[str]] = field(default_factory=dict)
    why: Mapping[str, str] = field(default_factory=dict)  # tool or argument -> why it is not offered

    def refuses(self, tool: str, args: Mapping[str, object]) -> str | None:
        """Why this call is not available for this request (None = it is)."""
        if tool not in self.tools:
            return f"{tool} is not available for this request: {self.why.get(tool, 'not offered')}"
        used = sorted(k for k, v in args.items() if v is not None and k in self.hidden.get(tool, frozenset()))
        if used:
            return f"{', '.join(used)} of {tool} {'is' if len(used) == 1 else 'are'} not available: " + (
                self.why.get(used[0], "not offered for this request")
            )
        return None

    def params(self, tool: str, names: tuple[str, ...]) -> tuple[str, ...]:
        """The names of `tool`'s parameters this request is offered, in order."""
        hidden = self.hidden.get(tool, frozenset())
        return tuple(n for n in names if n not in hidden)


NO_IMAGE = "it needs an image: attach one or reply to one"
NO_PAST = "the request does not point at earlier images"


def offer_for(
    tool_names: tuple[str, ...], *, has_image: bool, past: bool, latest_image: bool = False, check: bool = False
) -> Offer:
    """The offer for a request with (or without) an image, pointing (or not) at the past."""
    tools = [t for t in tool_names if t in ALWAYS]
    why: dict[str, str] = {}
    if "search_history" in tool_names:
        if past:
            tools.append("search_history")
        else:
            why["search_history"] = NO_PAST
    if "critique" in tool_names:
        if has_image or latest_image or check:
            tools.append("critique")
        else:
            why["critique"] = NO_IMAGE
    if "describe" in tool_names:
        if has_image or latest_image:
            tools.append("describe")
        else:
            why["describe"] = NO_IMAGE
    hidden: dict[str, set[str]] = {}
    if not has_image:
        for tool, names in IMAGE_PARAMS.items():
            hidden.setdefault(tool, set()).update(names)
            why.update(dict.fromkeys(names, NO_IMAGE))
    if not (has_image or past):
        for tool, names in PAST_PARAMS.items():
            hidden.setdefault(tool, set()).update(names)
            why.update(dict.fromkeys(names, "it needs an earlier image: reply to one or name it"))
    ordered = tuple(t for t in tool_names if t in tools)
    return Offer(ordered, {k: frozenset(v) for k, v in hidden.items()}, why)


def everything(tool_names: tuple[str, ...]) -> Offer:
    """No restriction (fronts calling a tool directly with explicit arguments)."""
    return Offer(tuple(tool_names))
