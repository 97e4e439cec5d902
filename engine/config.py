"""Typed settings: one pydantic model parses config.json; secrets come only from the environment."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.json"
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Section):
    data_dir: str = "data"
    db: str = "atelier.db"
    outputs: str = "outputs"
    models: str = "models"
    demo_models: str = "demo-models"


class Gpu(Section):
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    vram_budget_mb: PosInt | None = None
    reserve_mb: NonNegInt = 1024
    ram_budget_mb: PosInt = 8192
    idle_ttl_s: PosFloat = 600.0
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"


class Generation(Section):
    default_preset: str = "sdxl"
    max_pixels: PosInt = 1024 * 1024
    max_side: PosInt = 2048
    max_steps: PosInt = 80
    max_batch: Annotated[int, Field(ge=1, le=4)] = 4
    safety: Literal["block", "spoiler", "off"] = "block"
    preview_every_steps: PosInt = 5
    upscaler: str | None = None


class Images(Section):
    max_input_bytes: PosInt = 20 * 1024 * 1024
    max_input_pixels: PosInt = 4096 * 4096
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")
    upload_limit_bytes: PosInt = 10 * 1024 * 1024


class Llm(Section):
    preset: str = "qwen2.5-vl-7b"
    vision_preset: str | None = None  # critique's LLM when `preset` has no vision projector (mmproj)
    max_tokens: PosInt = 384
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2


class Agent(Section):
    max_tool_calls: Annotated[int, Field(ge=1, le=16)] = 4
    max_wall_s: PosFloat = 120.0
    history_turns: PosInt = 12


class Queue(Section):
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_per_user: PosInt = 2
    daily_quota: PosInt = 200
    max_attempts: PosInt = 3
    lease_s: PosFloat = 120.0
    max_batch: Annotated[int, Field(ge=1, le=16)] = 4
    batch_window_ms: NonNegInt = 150
    worker_ttl_s: PosFloat = 15.0
    job_timeout_s: PosFloat = 900.0


class IpAdapter(Section):
    model: str  # hub id or local folder
    subfolder: str = ""
    weight: str
    image_encoder: str  # folder inside `model` (a name without "/" is taken inside `subfolder`)


_SD15_NETS = {
    t: f"lllyasviel/control_v11p_sd15_{t}" for t in ("canny", "openpose", "lineart", "softedge", "scribble")
} | {"depth": "lllyasviel/control_v11f1p_sd15_depth"}


class Control(Section):
    annotators: str = "lllyasviel/Annotators"  # hub repo (or folder) with the preprocessors' weights
    detect_resolution: Annotated[int, Field(ge=64, le=2048)] = 512
    max_controls: Annotated[int, Field(ge=1, le=3)] = 3
    reference_scale: Annotated[float, Field(ge=0, le=1.5)] = 0.6
    outpaint_overlap_px: Annotated[int, Field(ge=0, le=128)] = 16
    # family -> control type -> ControlNet weights (hub id or local path); a missing entry is a clear error
    controlnets: dict[Literal["sd15", "sdxl", "flux"], dict[str, str]] = {
        "sd15": _SD15_NETS,
        "sdxl": {
            "canny": "diffusers/controlnet-canny-sdxl-1.0",
            "depth": "diffusers/controlnet-depth-sdxl-1.0",
            "openpose": "thibaud/controlnet-openpose-sdxl-1.0",
            "scribble": "xinsir/controlnet-scribble-sdxl-1.0",
        },
        "flux": {"canny": "InstantX/FLUX.1-dev-Controlnet-Canny"},
    }
    ip_adapter: dict[Literal["sd15", "sdxl"], IpAdapter] = {
        "sd15": IpAdapter(
            model="h94/IP-Adapter",
            subfolder="models",
            weight="ip-adapter_sd15.safetensors",
            image_encoder="models/image_encoder",
        ),
        "sdxl": IpAdapter(
            model="h94/IP-Adapter",
            subfolder="sdxl_models",
            weight="ip-adapter_sdxl.safetensors",
            image_encoder="sdxl_models/image_encoder",
        ),
    }


class History(Section):
    page_size: Annotated[int, Field(ge=1, le=100)] = 10
    search_budget_ms: PosInt = 200
    max_query_chars: PosInt = 500


class Discord(Section):
    command_prefix: str = "!"
    message_content_intent: bool = False
    sync_guilds: tuple[int, ...] = ()
    progress_edit_interval_s: PosFloat = 1.5
    max_message_chars: Annotated[int, Field(ge=100, le=2000)] = 2000


class Metrics(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464


class UserPresets(Section):
    file: str = "presets.toml"  # next to the config file: [[image]] / [[llm]] tables; absent = none
    image: tuple[dict[str, object], ...] = ()  # image presets written in the config itself
    llm: tuple[dict[str, object], ...] = ()  # LLM presets written in the config itself


class Settings(Section):
    paths: Paths = Paths()
    gpu: Gpu = Gpu()
    generation: Generation = Generation()
    images: Images = Images()
    llm: Llm = Llm()
    agent: Agent = Agent()
    queue: Queue = Queue()
    control: Control = Control()
    history: History = History()
    discord: Discord = Discord()
    metrics: Metrics = Metrics()
    presets: UserPresets = UserPresets()
    base_dir: str = Field(default=".", exclude=True)

    def user_presets_file(self) -> Path:
        """The user presets file (next to the config file unless the path is absolute)."""
        value = Path(os.path.expanduser(self.presets.file))
        return value if value.is_absolute() else Path(self.base_dir) / value

    def path(self, name: str) -> Path:
        """Resolve a `paths` entry: absolute as given, else under data_dir (data_dir under base_dir)."""
        data = Path(self.base_dir) / os.path.expanduser(self.paths.data_dir)
        if name == "data_dir":
            return data
        value = Path(os.path.expanduser(getattr(self.paths, name)))
        return value if value.is_absolute() else data / value

    @property
    def discord_token(self) -> str | None:
        """The bot token, read from DISCORD_TOKEN only (never from a file)."""
        return os.environ.get("DISCORD_TOKEN") or None


def _type_name(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "list of " + _type_name(typing.get_args(tp)[0])
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object"
    return getattr(tp, "__name__", str(tp))


def _expected(loc: tuple) -> str:
    model: type[BaseModel] = Settings
    ann: object = Settings
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            break
        field = model.model_fields.get(str(part))
        if field is None:
            return ""
        ann = field.annotation
        for meta in field.metadata:
            ann = Annotated[ann, meta]
        model = ann if isinstance(ann, type) else typing.get_origin(ann) or ann
    return _type_name(ann)


def format_errors(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key and the expected type."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int))
        key = ".".join(str(p) for p in loc) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
            continue
        expected = _expected(loc)
        got = json.dumps(e.get("input"), default=str)[:60]
        hint = f" (expected {expected})" if expected else ""
        lines.append(f"{source}: invalid value for '{key}': {e['msg']}{hint}; got {got}")
    return "\n".join(lines)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """--config wins, then ATELIER_CONFIG, then the repo's config.json."""
    chosen = explicit or os.environ.get("ATELIER_CONFIG")
    return Path(chosen) if chosen else REPO_CONFIG


def load_settings(path: str | os.PathLike | None = None, **overrides: object) -> Settings:
    """Read and validate a config file; raise ConfigError naming the bad key."""
    p = config_path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be an object")
    raw.pop("$comment", None)
    raw.update(overrides)
    raw.setdefault("base_dir", str(p.resolve().parent))
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(e, str(p))) from None
