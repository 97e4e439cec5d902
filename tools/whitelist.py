"""The explicit tool whitelist; building the registry at import fails on duplicate names."""

from __future__ import annotations

from tools.apply_style import apply_style
from tools.critique import critique
from tools.describe import describe
from tools.enhance_prompt import enhance_prompt
from tools.generate import generate
from tools.registry import Registry
from tools.search_history import search_history

WHITELIST = (generate, apply_style, search_history, enhance_prompt, critique, describe)
REGISTRY = Registry(WHITELIST)
TOOL_NAMES: tuple[str, ...] = REGISTRY.names
