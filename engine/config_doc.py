"""Settings documentation read off the model: one entry per key, and the README's configuration table."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from engine.config import Settings

README_HEADER = "| section | keys |\n| --- | --- |"
_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclass(frozen=True)
class KeyDoc:
    """One documented key: dotted name, type, JSON default (None when required) and description."""

    key: str
    type: str
    default: object
    description: str
    required: bool = False

    def as_dict(self) -> dict[str, object]:
        """The JSON form used by `atelier config --explain --json`."""
        return asdict(self)


def _constraints(meta: Iterable[object]) -> dict[str, object]:
    """gt/ge/lt/le found in pydantic or annotated-types metadata (a nested FieldInfo included)."""
    found: dict[str, object] = {}
    for m in meta:
        for item in m.metadata if isinstance(m, FieldInfo) else [m]:
            found.update((k, getattr(item, k)) for k in _OPS if getattr(item, k, None) is not None)
    return found


def _bounds(meta: Iterable[object]) -> str:
    """'1-4', '>0' or '>=0' ('' when unbounded)."""
    found = _constraints(meta)
    if "ge" in found and "le" in found:
        return f"{found['ge']}-{found['le']}"
    return " ".join(f"{_OPS[k]}{v}" for k, v in found.items())


def type_label(tp: object, meta: Iterable[object] = ()) -> str:
    """A short readable type: 'int 1-4', 'auto/cuda/cpu', 'int >0 or null', 'list of str', '{str: str}'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return type_label(args[0], [*meta, *args[1:]])
    if origin is Literal:
        return "/".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_label(a, meta) for a in args)
    if origin is tuple:
        return "list of " + type_label(args[0])
    if origin is dict:
        return "{" + type_label(args[0]) + ": " + type_label(args[1]) + "}"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object"
    name = "any" if tp is object else getattr(tp, "__name__", str(tp))
    bounds = _bounds(meta)
    return f"{name} {bounds}" if bounds else name


def nested_models(tp: object) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (e.g. IpAdapter in dict[str, IpAdapter])."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in nested_models(arg)]


def _doc(key: str, field: FieldInfo) -> KeyDoc:
    required = field.is_required()
    default = None if required else to_jsonable_python(field.get_default(call_default_factory=True))
    label = type_label(field.annotation, field.metadata)
    return KeyDoc(key, label, default, field.description or "", required)


def key_docs(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[KeyDoc]:
    """Every documented key of `model`, sections flattened ('queue.max_per_user'), items of maps as '*'."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key, ann = prefix + name, field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from key_docs(ann, key + ".")
            continue
        yield _doc(key, field)
        for sub in nested_models(ann):
            yield from key_docs(sub, key + ".*.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _readme_key(doc: KeyDoc) -> str:
    name = doc.key.split(".", 1)[1]
    return _cell(f"`{name}` ({doc.type}): {doc.description}")


def readme_table() -> str:
    """The README's configuration table: one row per section, each key with its type and description."""
    rows: dict[str, list[str]] = {}
    for doc in key_docs():
        rows.setdefault(doc.key.split(".", 1)[0], []).append(_readme_key(doc))
    lines = [f"| `{section}` | {'<br>'.join(keys)} |" for section, keys in rows.items()]
    return "\n".join([README_HEADER, *lines])
