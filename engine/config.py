"""Typed settings: one pydantic model parses config.json; secrets come only from the environment."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, Field, ValidationError

from engine.config_autotag import AutoTag
from engine.config_base import NonNegInt, PosFloat, PosInt, Section
from engine.config_control import Control
from engine.config_quality import Cache, Cost, Scoring
from engine.config_video import Video
from engine.config_web import Web

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.json"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""



class Paths(Section):
    """Where Atelier keeps its files (absolute paths are used as given, `~` is expanded)."""

    data_dir: str = Field("data", description="folder of all state, relative to the config file's folder")
    db: str = Field("atelier.db", description="SQLite database file, relative to data_dir")
    outputs: str = Field("outputs", description="folder of generated images, relative to data_dir")
    models: str = Field("models", description="folder of downloaded model files, relative to data_dir")
    demo_models: str = Field(
        "demo-models", description="folder of the offline test models (--demo), relative to data_dir"
    )


class Gpu(Section):
    """The device models run on and the memory the arbiter may fill."""

    device: Literal["auto", "cuda", "cpu", "mps"] = Field(
        "auto", description="where models run; auto = cuda if available, else mps, else cpu"
    )
    vram_budget_mb: PosInt | None = Field(
        None, description="MiB of GPU memory the arbiter may fill; null = the GPU's total minus reserve_mb"
    )
    reserve_mb: NonNegInt = Field(
        1024, description="MiB of GPU memory left to other programs when vram_budget_mb is null"
    )
    ram_budget_mb: PosInt = Field(8192, description="MiB of memory the arbiter may fill on cpu or mps")
    idle_ttl_s: PosFloat = Field(600.0, description="seconds an unused model stays loaded before eviction")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="weight precision; auto = float32 on cpu, bfloat16 for FLUX, else float16"
    )
    compile: bool = Field(
        False,
        description="torch.compile the denoiser at load and warm it with one step (the load takes longer, "
        "counted in the arbiter's load time); each new image size or guidance on/off compiles once more",
    )
    channels_last: bool = Field(
        False, description="channels-last memory layout for the UNet and VAE (faster convolutions on GPUs)"
    )
    attention: Literal["sdpa", "default"] = Field(
        "sdpa",
        description="attention kernel: sdpa = torch scaled_dot_product_attention (flash/memory-efficient on "
        "GPUs); default = diffusers' plain matmul-softmax processor (slow, reference numerics)",
    )
    vae_tiling_over_px: PosInt | None = Field(
        None,
        description="decode in VAE tiles when w × h exceeds this; null = only as the out-of-memory fallback. "
        "Off by default: tiles are blended, so pixels differ from a whole decode (visible on large images)",
    )
    fuse_qkv: bool = Field(
        False,
        description="fuse the attention q/k/v projections into one matmul where the model supports it "
        "(unfused while LoRAs are active, which target the separate projections)",
    )
    lora_hotswap: bool = Field(
        False,
        description="swap LoRA weights in place (diffusers enable_lora_hotswap) so a compiled denoiser is not recompiled "
        "when LoRAs change; idle slots stay at weight 0. Limits: the first LoRA after a load adds the adapter "
        "layers and recompiles once (peft warns the model is already compiled), as do the first swap after it "
        "and each added slot; later LoRAs must target a subset of the first one's layers, rank <= lora_max_rank",
    )
    lora_max_rank: PosInt = Field(
        64, description="largest LoRA rank that can be hot-swapped (smaller ones are padded to it)"
    )


SafetyPolicy = Literal["block", "spoiler", "off"]  # the one list of safety policies
SAFETY_POLICIES: tuple[str, ...] = get_args(SafetyPolicy)


class Generation(Section):
    """Limits and defaults of image generation."""

    default_preset: str = Field("sdxl", description="image preset used when a request names none")
    max_pixels: PosInt = Field(1024 * 1024, description="largest image area per request, in pixels (w × h)")
    max_side: PosInt = Field(2048, description="largest image width or height, in pixels")
    max_steps: PosInt = Field(80, description="most denoising steps a request may ask for")
    max_batch: Annotated[int, Field(ge=1, le=4)] = Field(4, description="most images per request")
    safety: SafetyPolicy = Field(
        "block", description="flagged images: block = withheld, spoiler = posted as spoilers, off = no check"
    )
    preview_every_steps: PosInt = Field(5, description="denoising steps between progress previews")
    upscaler: str | None = Field(
        None, description="dedicated upscaler model (hub id or path); null = tiled img2img with the preset"
    )
    edit_preset: str = Field("", description="image preset of instruction edits (Kontext); empty = img2img instead")
    draft_preset: str = Field("sdxl-turbo", description="image preset of fast drafts (/imagine draft:true)")
    enhance_preset: str = Field("", description="image preset that enhances a draft; empty = the default preset")
    enhance_strength: Annotated[float, Field(gt=0, le=1)] = Field(0.55, description="Enhance's img2img strength")


class Images(Section):
    """Limits on the images users send and the files the bot uploads."""

    max_input_bytes: PosInt = Field(20 * 1024 * 1024, description="largest accepted input image, in bytes")
    max_input_pixels: PosInt = Field(4096 * 4096, description="largest accepted input image area, in pixels")
    formats: tuple[str, ...] = Field(
        ("PNG", "JPEG", "WEBP", "GIF"), description="accepted input formats (Pillow format names)"
    )
    upload_limit_bytes: PosInt = Field(
        10 * 1024 * 1024, description="largest file the bot uploads, in bytes (a guild's lower limit wins)"
    )


class Llm(Section):
    """The language model behind the agent, prompt enhancing and critique."""

    preset: str = Field("qwen2.5-vl-7b", description="LLM preset of the agent and the text tools")
    vision_preset: str | None = Field(
        None, description="critique's LLM preset when `preset` has no vision projector (mmproj); null = none"
    )
    max_tokens: PosInt = Field(384, description="most tokens the LLM writes per reply")
    temperature: Annotated[float, Field(ge=0, le=2)] = Field(
        0.2, description="sampling temperature; 0 = always the likeliest token"
    )
    prefix_cache_mb: NonNegInt = Field(
        256,
        description="host memory (MiB) for saved prompt-prefix states, so every agent step's prompt stays warm "
        "across users' turns; 0 = only the last prompt is reused",
    )


class Agent(Section):
    """Bounds on one agent turn."""

    max_tool_calls: Annotated[int, Field(ge=1, le=16)] = Field(4, description="most tool calls in one turn")
    max_wall_s: PosFloat = Field(120.0, description="seconds one turn may take before it is stopped")
    history_turns: PosInt = Field(12, description="earlier messages of the conversation the LLM sees")


class Queue(Section):
    """The job queue: backend, fairness, quotas, retries and batching."""

    backend: Literal["local", "redis"] = Field(
        "local", description="local = jobs run in this process; redis = `atelier worker`s run them"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis server when backend is redis")
    max_per_user: PosInt = Field(2, description="jobs one user may have running at once")
    daily_quota: PosInt = Field(200, description="jobs one user may submit per rolling 24 hours")
    max_attempts: PosInt = Field(
        3, description="tries per job before it fails (redis: before it is dead-lettered)"
    )
    lease_s: PosFloat = Field(
        120.0, description="seconds a claimed job is held without a heartbeat before it is taken back"
    )
    max_batch: Annotated[int, Field(ge=1, le=16)] = Field(
        4, description="jobs a runner or worker holds at once, and most images in one shared batch"
    )
    batch_window_ms: NonNegInt = Field(
        150, description="milliseconds a lone request waits for compatible ones; 0 = no wait"
    )
    worker_ttl_s: PosFloat = Field(
        15.0, description="seconds after its last heartbeat a worker counts as gone"
    )
    job_timeout_s: PosFloat = Field(
        900.0, description="seconds one try of a redis job may run before it is abandoned"
    )


class History(Section):
    """Paging and searching a user's past generations."""

    page_size: Annotated[int, Field(ge=1, le=100)] = Field(10, description="generations per history page")
    search_budget_ms: PosInt = Field(
        200, description="milliseconds a history search may run; a broader one is refused"
    )
    max_query_chars: PosInt = Field(
        500, description="longest history search, in characters (a longer one is refused)"
    )


class Discord(Section):
    """The Discord front (the token comes only from DISCORD_TOKEN)."""

    command_prefix: str = Field("!", description="prefix of text commands (only with message_content_intent)")
    message_content_intent: bool = Field(
        False, description="read message text (privileged intent, enable it in the developer portal)"
    )
    sync_guilds: tuple[int, ...] = Field(
        (), description="guild ids whose slash commands sync at once; empty = sync globally"
    )
    progress_edit_interval_s: PosFloat = Field(1.5, description="seconds between edits of a progress message")
    max_message_chars: Annotated[int, Field(ge=100, le=2000)] = Field(
        2000, description="longest message the bot sends, in characters; longer replies are split"
    )


class Metrics(Section):
    """The Prometheus /metrics and /healthz server."""

    enabled: bool = Field(True, description="serve /metrics and /healthz")
    host: str = Field("127.0.0.1", description="address the metrics server listens on")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9464, description="port of the metrics server; 0 = any free port"
    )


class UserPresets(Section):
    """Presets added on top of the shipped ones (prompts/presets.toml)."""

    file: str = Field(
        "presets.toml",
        description="TOML file of [[image]] / [[llm]] tables, next to the config file; absent file = none",
    )
    image: tuple[dict[str, object], ...] = Field((), description="image presets written in the config itself")
    llm: tuple[dict[str, object], ...] = Field((), description="LLM presets written in the config itself")


class Settings(Section):
    """Every setting: one field per section of config.json."""

    paths: Paths = Field(Paths(), description=Paths.__doc__)
    gpu: Gpu = Field(Gpu(), description=Gpu.__doc__)
    generation: Generation = Field(Generation(), description=Generation.__doc__)
    images: Images = Field(Images(), description=Images.__doc__)
    llm: Llm = Field(Llm(), description=Llm.__doc__)
    agent: Agent = Field(Agent(), description=Agent.__doc__)
    queue: Queue = Field(Queue(), description=Queue.__doc__)
    control: Control = Field(Control(), description=Control.__doc__)
    history: History = Field(History(), description=History.__doc__)
    discord: Discord = Field(Discord(), description=Discord.__doc__)
    metrics: Metrics = Field(Metrics(), description=Metrics.__doc__)
    cache: Cache = Field(Cache(), description=Cache.__doc__)
    scoring: Scoring = Field(Scoring(), description=Scoring.__doc__)
    cost: Cost = Field(Cost(), description=Cost.__doc__)
    web: Web = Field(Web(), description=Web.__doc__)
    autotag: AutoTag = Field(AutoTag(), description=AutoTag.__doc__)
    video: Video = Field(Video(), description=Video.__doc__)
    presets: UserPresets = Field(UserPresets(), description=UserPresets.__doc__)
    base_dir: str = Field(
        default=".", exclude=True, description="folder relative paths start from (set to the config file's)"
    )

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
