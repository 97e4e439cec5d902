"""What happens to an optional argument that does not validate (llama.cpp grammars cannot enforce numeric bounds).

The rule, the same for every tool and every caller:
- a number outside its bounds is clamped to the nearest bound ("count 6 -> 4"), except identifiers (seed,
  *_id), which are dropped: a clamped seed or id would name a different image;
- any other invalid optional value (an unknown style, aspect or control type) is dropped;
- each repair adds a note that the model and the user see;
- an invalid required argument, an unknown argument, or anything still invalid after the repair rejects the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

_BOUNDS = {"greater_than_equal": "ge", "less_than_equal": "le"}  # strict bounds (gt, lt) cannot be clamped to


def identifier(name: str) -> bool:
    """Arguments that name something (a seed, an id): never clamped."""
    return name == "seed" or name.endswith("_id")


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _why(err: dict) -> str:
    return str(err["msg"]).removeprefix("Value error, ")


def repair(model: type[BaseModel], args: Mapping[str, Any]) -> tuple[BaseModel, list[str]]:
    """Validate `args`, clamping or dropping bad optional values with a note each; ValidationError otherwise."""
    try:
        return model.model_validate(dict(args)), []
    except ValidationError as e:
        first = e
    fixed = dict(args)
    notes: list[str] = []
    fields = model.model_fields
    done: set[str] = set()
    for err in first.errors():
        key = err["loc"][0] if err["loc"] else None
        if key in done:
            continue
        if not isinstance(key, str) or key not in fields or fields[key].is_required() or key not in fixed:
            raise first
        done.add(key)
        if err["type"] in _BOUNDS and not identifier(key):
            bound = err["ctx"][_BOUNDS[err["type"]]]
            notes.append(f"{key} {_shown(fixed[key])} is out of range; used {bound}")
            fixed[key] = bound
        else:
            notes.append(f"left out {key} {_shown(fixed.pop(key))}: {_why(err)}")
    return model.model_validate(fixed), notes
