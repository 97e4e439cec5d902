"""Tool registry: argument models and JSON schemas built from typed functions and their "Args:" docstrings.

A tool is `async def name(ctx: ToolContext, arg: type = default, ...) -> dict`. The reserved `ctx` is never
in a schema. String parameters must be bounded (max_length or Choices); Choices parameters get their allowed
values (style names, preset names) from the database when a schema is built.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, create_model
from pydantic.fields import FieldInfo

from engine.runtime.llm.grammar import grammar_safe  # noqa: F401  (re-exported: the tools apply it to their schemas)

RESERVED = "ctx"
REPLY = "reply"
REPLY_MAX_CHARS = 1500
CHOICE_MAX_CHARS = 64
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ChoiceMap = Mapping[str, Sequence[str]]


class ToolDefinitionError(TypeError):
    """A tool function that cannot be registered (bad signature, missing docs, unbounded string...)."""


class DuplicateTool(ToolDefinitionError):
    """Two whitelisted tools share a name."""


@dataclass(frozen=True)
class Choices:
    """Annotated marker: the allowed values of this str parameter come from the DB (key into a ChoiceMap)."""

    kind: str


@dataclass(frozen=True)
class Param:
    """One schema parameter of a tool."""

    name: str
    annotation: Any
    default: Any
    description: str
    choices: str | None

    @property
    def required(self) -> bool:
        """True when the parameter has no default."""
        return self.default is inspect.Parameter.empty


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(summary, {arg: description}) from a Google-style docstring with an "Args:" section."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary = lines[0].strip() if lines else ""
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines[1:]:
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):  # a new section ends Args
            break
        m = re.match(r"^\s{2,8}(\w+)\s*:\s*(.*)$", line)
        if m and (current is None or len(line) - len(line.lstrip()) <= 8):
            current = m.group(1)
            args[current] = m.group(2).strip()
        elif current and line.strip():
            args[current] = f"{args[current]} {line.strip()}"
    return summary, args


def _split_choices(annotation: Any) -> tuple[Any, str | None]:
    """Remove a Choices marker from an annotation (also inside `X | None`); return (annotation, kind)."""
    if typing.get_origin(annotation) is Annotated:
        base, *meta = typing.get_args(annotation)
        kinds = [m.kind for m in meta if isinstance(m, Choices)]
        if kinds:
            return base, kinds[0]
    if typing.get_origin(annotation) in (Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(annotation)
        for i, arg in enumerate(args):
            inner, kind = _split_choices(arg)
            if kind:
                rest = [a for j, a in enumerate(args) if j != i]
                return Union[tuple([inner, *rest])], kind  # noqa: UP007
    return annotation, None


def _choice_type(kind: str, names: Sequence[str]) -> Any:
    """A bounded str whose schema lists `names` and whose validation error names the closest ones."""
    allowed = tuple(dict.fromkeys(names))

    def check(value: str) -> str:
        if allowed and value not in allowed:
            close = difflib.get_close_matches(value.lower(), allowed, n=4, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(allowed[:20])}"
            raise ValueError(f"unknown {kind} '{value}'; {hint}")
        return value

    extra = {"enum": list(allowed)} if allowed else None
    return Annotated[str, Field(max_length=CHOICE_MAX_CHARS, json_schema_extra=extra), AfterValidator(check)]


def _field_type(param: Param, choices: ChoiceMap) -> Any:
    if param.choices is None:
        return param.annotation
    base = _choice_type(param.choices, choices.get(param.choices, ()))
    return base | None if param.default is None else base


def _strip(schema: Any) -> Any:
    """Drop titles and defaults (noise for the grammar) recursively."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k not in ("title", "default")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def _unbounded_strings(schema: Any, path: str = "") -> list[str]:
    if isinstance(schema, dict):
        found = []
        if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
            found.append(path or "(root)")
        for k, v in schema.items():
            found += _unbounded_strings(v, f"{path}.{k}" if path else k)
        return found
    if isinstance(schema, list):
        return [p for i, v in enumerate(schema) for p in _unbounded_strings(v, f"{path}[{i}]")]
    return []


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """One registered tool: its function, description and schema parameters (ctx excluded)."""

    name: str
    func: Callable[..., Any]
    description: str
    params: tuple[Param, ...]

    def args_model(self, choices: ChoiceMap | None = None) -> type[BaseModel]:
        """The pydantic model of the arguments (extra keys forbidden)."""
        return _args_model(self, _freeze(choices or {}))

    def args_schema(self, choices: ChoiceMap | None = None) -> dict:
        """The JSON schema of the arguments, without titles or defaults."""
        return _strip(self.args_model(choices).model_json_schema())


def _freeze(choices: ChoiceMap) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k, tuple(v)) for k, v in choices.items()))


@cache
def _args_model(spec: ToolSpec, frozen: tuple) -> type[BaseModel]:
    choices = dict(frozen)
    fields: dict[str, Any] = {}
    for p in spec.params:
        default = ... if p.required else p.default
        fields[p.name] = (_field_type(p, choices), Field(default, description=p.description))
    camel = "".join(part.title() for part in spec.name.split("_"))
    return create_model(f"{camel}Args", __config__=ConfigDict(extra="forbid"), **fields)


def spec_from_function(func: Callable[..., Any]) -> ToolSpec:
    """Build a ToolSpec; raise ToolDefinitionError for anything that would make an unsafe or vague schema."""
    name = func.__name__
    if not _NAME.match(name) or name == REPLY:
        raise ToolDefinitionError(f"tool name {name!r} must be snake_case and not {REPLY!r}")
    if not inspect.iscoroutinefunction(inspect.unwrap(func)):
        raise ToolDefinitionError(f"tool {name}: must be an async function")
    summary, docs = parse_docstring(func.__doc__)
    if not summary:
        raise ToolDefinitionError(f"tool {name}: needs a docstring (its first line is the description)")
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)
    items = list(sig.parameters.values())
    if not items or items[0].name != RESERVED:
        raise ToolDefinitionError(f"tool {name}: the first parameter must be the reserved '{RESERVED}'")
    params = []
    for p in items[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name}: *args/**kwargs are not allowed ({p.name})")
        if p.name not in hints:
            raise ToolDefinitionError(f"tool {name}: parameter {p.name!r} needs a type annotation")
        if not docs.get(p.name):
            raise ToolDefinitionError(f"tool {name}: parameter {p.name!r} is not described under 'Args:'")
        if isinstance(p.default, FieldInfo):
            raise ToolDefinitionError(f"tool {name}: put Field(...) in Annotated, not as {p.name}'s default")
        annotation, kind = _split_choices(hints[p.name])
        params.append(Param(p.name, annotation, p.default, docs[p.name], kind))
    extra = set(docs) - {p.name for p in params}
    if extra:
        raise ToolDefinitionError(f"tool {name}: 'Args:' documents unknown parameters {sorted(extra)}")
    spec = ToolSpec(name, func, summary, tuple(params))
    try:
        schema = spec.args_schema({})
    except Exception as e:  # pydantic cannot build a schema for the annotation
        raise ToolDefinitionError(f"tool {name}: cannot build an argument schema: {e}") from None
    unbounded = _unbounded_strings(schema)
    if unbounded:
        raise ToolDefinitionError(f"tool {name}: unbounded string parameter(s) {unbounded}; set max_length")
    return spec


class Registry:
    """The whitelisted tools, by name; duplicates are an error at construction (i.e. at import)."""

    def __init__(self, funcs: Iterable[Callable[..., Any]], *, reply_max_chars: int = REPLY_MAX_CHARS):
        self._specs: dict[str, ToolSpec] = {}
        for func in funcs:
            spec = spec_from_function(func)
            if spec.name in self._specs:
                raise DuplicateTool(f"two whitelisted tools are named {spec.name!r}")
            self._specs[spec.name] = spec
        self.reply_max_chars = reply_max_chars

    @property
    def names(self) -> tuple[str, ...]:
        """Tool names in whitelist order."""
        return tuple(self._specs)

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """All specs in whitelist order."""
        return tuple(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> ToolSpec | None:
        """The spec of a whitelisted tool, or None."""
        return self._specs.get(name)

    def action_schema(self, choices: ChoiceMap | None = None) -> dict:
        """anyOf one {"tool": const, "args": {...}} per tool plus {"tool": "reply", "text": str}."""
        variants = [
            {
                "type": "object",
                "properties": {"tool": {"const": s.name}, "args": s.args_schema(choices)},
                "required": ["tool", "args"],
                "additionalProperties": False,
            }
            for s in self.specs
        ]
        variants.append(
            {
                "type": "object",
                "properties": {
                    "tool": {"const": REPLY},
                    "text": {"type": "string", "minLength": 1, "maxLength": self.reply_max_chars},
                },
                "required": ["tool", "text"],
                "additionalProperties": False,
            }
        )
        return {"anyOf": variants}

    def action_model(self, choices: ChoiceMap | None = None) -> type[RootModel]:
        """The pydantic discriminated union matching action_schema (re-validates every model output)."""
        return _action_model(self, _freeze(choices or {}))

    def __hash__(self) -> int:
        return id(self)


class ReplyActionBase(BaseModel):
    """{"tool": "reply", "text": ...}: the final answer of a turn."""

    model_config = ConfigDict(extra="forbid")


@cache
def _action_model(registry: Registry, frozen: tuple) -> type[RootModel]:
    choices = dict(frozen)
    variants = []
    for spec in registry.specs:
        camel = "".join(part.title() for part in spec.name.split("_"))
        variants.append(
            create_model(
                f"{camel}Action",
                __config__=ConfigDict(extra="forbid"),
                tool=(Literal[spec.name], ...),  # type: ignore[valid-type]
                args=(spec.args_model(choices), ...),
            )
        )
    text = Annotated[str, Field(min_length=1, max_length=registry.reply_max_chars)]
    variants.append(
        create_model("ReplyAction", __base__=ReplyActionBase, tool=(Literal["reply"], ...), text=(text, ...))
    )
    union = Annotated[Union[tuple(variants)], Field(discriminator="tool")]  # noqa: UP007
    return RootModel[union]  # type: ignore[valid-type]
