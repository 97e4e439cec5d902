"""Running `atelier` in a subprocess against a temp data folder, a temp hub cache and a chosen hub endpoint."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data(seed: int, n: int) -> bytes:
    """n deterministic random bytes."""
    return random.Random(seed).randbytes(n)


@dataclass
class Atelier:
    """One isolated installation: its config, data folder, HF_HOME and environment."""

    tmp: Path
    config: Path
    env: dict[str, str]

    @property
    def models(self) -> Path:
        """paths.models (the LLM files' hub cache)."""
        return self.tmp / "data" / "models"

    @property
    def hub_cache(self) -> Path:
        """The default Hugging Face cache (image models, the safety checker)."""
        return self.tmp / "hf" / "hub"

    def run(self, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`python -m bot.cli --config CONFIG ARGS...` with this environment."""
        cmd = [sys.executable, "-m", "bot.cli", "--config", str(self.config), *args]
        env = self.env | (extra or {})
        return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)

    def python(self, code: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run Python code with this environment (the engine reading what a pull wrote)."""
        env = self.env | (extra or {})
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300
        )


def make_atelier(tmp: Path, config: dict | None = None, endpoint: str | None = None) -> Atelier:
    """A temp config (data under tmp/data) and an environment whose hub is `endpoint` (default: unreachable)."""
    cfg = {"paths": {"data_dir": str(tmp / "data")}, "metrics": {"enabled": False}} | (config or {})
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and k != "DISCORD_TOKEN"
    }
    env |= {
        "HF_HOME": str(tmp / "hf"),
        "HF_ENDPOINT": endpoint or f"http://127.0.0.1:{closed_port()}",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
    }
    return Atelier(tmp, path, env)
