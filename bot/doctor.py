"""`atelier doctor`: what would break before a user hits it, one line per problem with its fix."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from bot.doctor_advice import Advice, candidates, recommend
from bot.doctor_limits import vram_limit_report
from engine.config import ConfigError, Settings, config_path, load_settings
from engine.runtime.model_files import PresetFiles, human, preset_files, stored_presets

MIB = 1024 * 1024
CUDA_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cu124"
CUDA_LLAMA = 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
CONFIGURED = (("generation.default_preset", "image"), ("llm.preset", "llm"), ("llm.vision_preset", "llm"))


@dataclass
class Check:
    """One finding: ok or a problem (with its fix), plus details for --json."""

    name: str
    ok: bool
    message: str
    fix: str = ""
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON form."""
        return {"ok": self.ok, "message": self.message, "fix": self.fix} | self.data

    def line(self) -> str:
        """The text form: one line."""
        tag = "ok     " if self.ok else "PROBLEM"
        return f"  {tag}  {self.name:14} {self.message}" + (f" - fix: {self.fix}" if self.fix else "")


def _drop(raw: dict, loc: tuple) -> bool:
    """Remove the innermost existing key along a validation error's location."""
    node = raw
    for i, key in enumerate(loc):
        if not isinstance(node, dict) or key not in node:
            return False
        if i == len(loc) - 1 or not isinstance(node[key], dict):
            del node[key]
            return True
        node = node[key]
    return False


def lenient_settings(path: Path) -> Settings:
    """The config with every invalid key left at its default, so the other checks can still run."""
    base = Settings(base_dir=str(path.resolve().parent))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return base
    if not isinstance(raw, dict):
        return base
    raw.pop("$comment", None)
    raw.setdefault("base_dir", base.base_dir)
    for _ in range(20):
        try:
            return Settings.model_validate(raw)
        except ValidationError as e:
            if not any([_drop(raw, tuple(err["loc"])) for err in e.errors()]):
                return base
    return base


def _config_fix(line: str, path: Path) -> str:
    key = line.split("'")[1] if line.count("'") >= 2 else ""
    if "unknown key" in line:
        return f"remove '{key}' from {path} (or fix its spelling)"
    if "invalid value" in line:
        return f"correct '{key}' in {path}"
    if "not found" in line:
        return "create it, or point --config / ATELIER_CONFIG at one"
    return f"fix {path}"


def check_config(explicit: str | None) -> tuple[Settings, list[Check]]:
    """The settings to check with, and one problem per bad line of the config file."""
    path = config_path(explicit)
    try:
        settings = load_settings(explicit)
    except ConfigError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        checks = [Check("config", False, ln, _config_fix(ln, path), {"path": str(path)}) for ln in lines]
        return lenient_settings(path), checks
    return settings, [Check("config", True, f"{path} is valid", data={"path": str(path)})]


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def check_torch(settings: Settings) -> tuple[str, list[Check], int | None]:
    """(device, [device, vram, torch checks], usable VRAM in MB or None)."""
    try:
        import torch
    except ImportError as e:
        return "cpu", [Check("torch", False, f"torch does not import ({e})", "pip install torch")], None
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    want = settings.gpu.device
    device = ("cuda" if cuda else "mps" if mps else "cpu") if want == "auto" else want
    nvidia = shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()
    info = {"version": torch.__version__, "cuda_available": cuda, "cuda_version": torch.version.cuda}
    checks = [_device_check(device, want, cuda, mps)]
    vram, budget = check_vram(settings, device, torch)
    checks.append(vram)
    if nvidia and torch.version.cuda is None:
        msg = f"an NVIDIA GPU is here but torch {torch.__version__} is a CPU-only build"
        checks.append(Check("torch", False, msg, CUDA_TORCH, info))
    elif nvidia and not cuda:
        msg = f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the NVIDIA GPU"
        checks.append(
            Check("torch", False, msg, "check the NVIDIA driver (nvidia-smi) matches that CUDA", info)
        )
    else:
        state = f"CUDA {torch.version.cuda}, available" if cuda else "CUDA not available"
        checks.append(Check("torch", True, f"torch {torch.__version__}: {state}", data=info))
    return device, checks, budget


def _device_check(device: str, want: str, cuda: bool, mps: bool) -> Check:
    found = "cuda" if cuda else "mps" if mps else "no CUDA or MPS device"
    data = {"device": device, "configured": want}
    if (want == "cuda" and not cuda) or (want == "mps" and not mps):
        msg = f'gpu.device is "{want}" but torch finds {found}'
        return Check("device", False, msg, 'set gpu.device to "auto" (or install a GPU build of torch)', data)
    return Check("device", True, f'{device} (gpu.device = "{want}"; found {found})', data=data)


def check_vram(settings: Settings, device: str, torch: object) -> tuple[Check, int | None]:
    """The GPU memory check and the budget the advice uses (total minus gpu.reserve_mb, or vram_budget_mb)."""
    gpu = settings.gpu
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()  # type: ignore[attr-defined]
        name = torch.cuda.get_device_name()  # type: ignore[attr-defined]
        budget = gpu.vram_budget_mb or max(0, total // MIB - gpu.reserve_mb)
        data = {"total_mb": total // MIB, "free_mb": free // MIB, "budget_mb": budget, "name": name}
        return Check("vram", True, f"{name}: {_gib(free)} free of {_gib(total)}", data=data), budget
    if device == "mps":
        total = int(torch.mps.recommended_max_memory())  # type: ignore[attr-defined]
        budget = gpu.vram_budget_mb or max(0, total // MIB - gpu.reserve_mb)
        data = {"total_mb": total // MIB, "free_mb": None, "budget_mb": budget, "name": "mps"}
        return Check(
            "vram", True, f"Apple GPU (MPS): up to {_gib(total)} (unified memory)", data=data
        ), budget
    data = {"total_mb": None, "free_mb": None, "budget_mb": None, "name": None}
    return Check("vram", True, "none (no CUDA device): models run in RAM on the CPU", data=data), None


def check_ram(settings: Settings, device: str) -> Check:
    """Free and total RAM; a problem when the CPU budget is more than the machine has."""
    import psutil

    mem = psutil.virtual_memory()
    data = {
        "total_mb": mem.total // MIB,
        "free_mb": mem.available // MIB,
        "budget_mb": settings.gpu.ram_budget_mb,
    }
    msg = f"{_gib(mem.available)} free of {_gib(mem.total)}"
    if device == "cpu" and settings.gpu.ram_budget_mb > mem.total // MIB:
        fix = f"set gpu.ram_budget_mb below {mem.total // MIB}"
        return Check("ram", False, f"{msg}, but gpu.ram_budget_mb is {settings.gpu.ram_budget_mb}", fix, data)
    return Check("ram", True, msg, data=data)


def check_llama(device: str) -> Check:
    """Whether llama.cpp was built with GPU offload; a problem when a GPU is there and it was not."""
    try:
        import llama_cpp
    except (ImportError, OSError) as e:
        return Check(
            "llama.cpp", False, f"llama-cpp-python does not load ({e})", "pip install llama-cpp-python"
        )
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    data = {"version": llama_cpp.__version__, "gpu_offload": offload}
    if offload:
        return Check("llama.cpp", True, f"{llama_cpp.__version__}: built with GPU offload", data=data)
    if device != "cpu":
        msg = (
            f"{llama_cpp.__version__} has no GPU offload: the LLM would run on the CPU beside a {device} GPU"
        )
        return Check(
            "llama.cpp",
            False,
            msg,
            CUDA_LLAMA if device.startswith("cuda") else "rebuild with -DGGML_METAL=on",
            data,
        )
    return Check(
        "llama.cpp",
        True,
        f"{llama_cpp.__version__}: no GPU offload (CPU build; fine without a GPU)",
        data=data,
    )


def mask(url: str) -> str:
    """A URL with its password hidden."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def check_redis(settings: Settings) -> Check:
    """A short-timeout PING when queue.backend is "redis"."""
    q = settings.queue
    if q.backend != "redis":
        return Check(
            "redis", True, f'not needed (queue.backend = "{q.backend}")', data={"backend": q.backend}
        )
    import redis

    data = {"backend": "redis", "url": mask(q.redis_url)}
    try:
        client = redis.Redis.from_url(q.redis_url, socket_connect_timeout=1.5, socket_timeout=1.5)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as e:
        why = f"{type(e).__name__}: {str(e)[:100]}"
        msg = f"cannot reach Redis at queue.redis_url = {mask(q.redis_url)} ({why})"
        return Check("redis", False, msg, 'start Redis there, or set queue.backend = "local"', data)
    return Check("redis", True, f"reachable at {mask(q.redis_url)}", data=data)


def check_token() -> Check:
    """DISCORD_TOKEN is set (its value is never shown)."""
    if os.environ.get("DISCORD_TOKEN"):
        return Check("DISCORD_TOKEN", True, "set", data={"set": True})
    portal = "https://discord.com/developers/applications"
    fix = f"export DISCORD_TOKEN=... (a bot token from {portal}); `atelier chat --demo` needs none"
    return Check("DISCORD_TOKEN", False, "not set: `atelier run` cannot log in", fix, {"set": False})


def _model_check(key: str, pf: PresetFiles) -> Check:
    data = {
        "setting": key,
        "kind": pf.kind,
        "preset": pf.name,
        "state": pf.state,
        "missing_bytes": pf.missing_bytes,
    }
    if pf.ready:
        return Check("models", True, f"{key} = '{pf.name}': on this machine", data=data)
    todo = "" if pf.missing_bytes is None else f", {human(pf.missing_bytes)} to download"
    gone = ", ".join(f"{s.role} {s.filename or s.ref}" for s in pf.sources if not s.ready)
    msg = f"{key} = '{pf.name}': {pf.state} ({gone}{todo})"
    return Check("models", False, msg, "; ".join(pf.fixes) or "see `atelier models list`", data)


async def check_models(settings: Settings) -> tuple[list[Check], list[tuple[str, dict]]]:
    """Present or missing, for the configured presets; also every stored preset (for the advice)."""
    from engine.store import open_store
    from engine.store.library import UnknownEntry

    try:
        store = await open_store(settings)
    except Exception as e:  # noqa: BLE001 - any failure to open the store is the finding
        msg = f"cannot open the store at {settings.path('db')} ({type(e).__name__}: {e})"
        return [Check("models", False, msg, "check paths.data_dir / paths.db are writable")], []
    try:
        stored = await stored_presets(store)
        checks = []
        for key, kind in CONFIGURED:
            name = (
                settings.generation.default_preset
                if key.startswith("generation")
                else getattr(settings.llm, key[4:])
            )
            if name is None:
                continue
            try:
                data = await store.presets.resolve(kind, name)
            except UnknownEntry as e:
                known = ", ".join(d["name"] for k, d in stored if k == kind)
                checks.append(
                    Check("models", False, f"{key} = '{name}': {e}", f"set {key} to one of {known}")
                )
                continue
            checks.append(_model_check(key, await asyncio.to_thread(preset_files, kind, data, settings)))
        return checks, stored
    finally:
        await store.close()


def advise(settings: Settings, device: str, budget: int | None, stored: list[tuple[str, dict]]) -> Advice:
    """The recommended pair for this machine."""
    images = candidates([d for k, d in stored if k == "image"], llm=False)
    llms = candidates([d for k, d in stored if k == "llm"], llm=True)
    return recommend(device, budget, images, llms, (settings.generation.default_preset, settings.llm.preset))


def collect(explicit: str | None) -> tuple[list[Check], Advice, Path]:
    """Every check, in the order they are shown, and the advice."""
    settings, checks = check_config(explicit)
    device, torch_checks, budget = check_torch(settings)
    model_checks, stored = asyncio.run(check_models(settings))
    checks = torch_checks[:2] + [check_ram(settings, device), check_llama(device), torch_checks[2]] + checks
    checks += model_checks + [check_redis(settings), check_token()]
    ok, limits, data = vram_limit_report(settings, stored)
    checks.append(Check("vram_limits", ok, limits, data=data))
    return checks, advise(settings, device, budget, stored), config_path(explicit)


def to_json(checks: list[Check], advice: Advice, path: Path) -> dict:
    """The --json report: one field per check (lists for models and config), the problems and the advice."""
    names = {"llama.cpp": "llama_cpp", "DISCORD_TOKEN": "discord_token"}
    out: dict = {"ok": all(c.ok for c in checks), "config_path": str(path)}
    for c in checks:
        key = names.get(c.name, c.name)
        if c.name in ("models", "config"):
            out.setdefault(key, []).append(c.to_json())
        else:
            out[key] = c.to_json()
    out["problems"] = [{"check": c.name, "message": c.message, "fix": c.fix} for c in checks if not c.ok]
    out["recommendation"] = advice.to_json()
    return out


def run_doctor(explicit: str | None, *, as_json: bool) -> int:
    """Entry point of `atelier doctor`: 0 when nothing is broken, 1 otherwise."""
    checks, advice, path = collect(explicit)
    problems = [c for c in checks if not c.ok]
    if as_json:
        print(json.dumps(to_json(checks, advice, path), indent=2))
        return 1 if problems else 0
    print(f"atelier doctor (config: {path})")
    print("\n".join(c.line() for c in checks))
    print(f"  advice   recommend      {advice.message}")
    print(f"{len(problems)} problem(s): fix them before `atelier run`" if problems else "no problems found")
    return 1 if problems else 0
