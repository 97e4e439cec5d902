"""bin/bootstrap picks the CUDA path when nvidia-smi lists a GPU, the portable CPU path otherwise (--plan)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def plan(tmp_path: Path, *, gpu_listed: bool | None, **env: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if gpu_listed is not None:
        smi.write_text("#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA RTX 4090 (UUID: GPU-x)'\n" if gpu_listed else "exit 9\n"))
        smi.chmod(0o755)
    elif smi.exists():
        smi.unlink()
    base = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "ATELIER_GPU", "ATELIER_TORCH_INDEX")}
    path = f"{bin_dir}:/usr/bin:/bin"
    out = subprocess.run([str(ROOT / "bin" / "bootstrap"), "--plan", "test"], capture_output=True, text=True,
                         env={**base, "PATH": path, **env}, check=True)  # fmt: skip
    return out.stdout.strip()


def test_an_nvidia_gpu_selects_the_cuda_build(tmp_path):
    assert plan(tmp_path, gpu_listed=True).startswith("gpu=cuda CMAKE_ARGS=-DGGML_CUDA=on ")


def test_no_gpu_keeps_the_portable_cpu_flags(tmp_path):
    for listed in (None, False):
        out = plan(tmp_path, gpu_listed=listed)
        assert out.startswith("gpu=cpu CMAKE_ARGS=-DGGML_NATIVE=OFF -DGGML_AVX2=ON") and "AVX512=OFF" in out


def test_either_path_can_be_forced(tmp_path):
    assert plan(tmp_path, gpu_listed=True, ATELIER_GPU="cpu").startswith("gpu=cpu ")
    assert plan(tmp_path, gpu_listed=None, ATELIER_GPU="cuda").startswith("gpu=cuda ")
    out = plan(tmp_path, gpu_listed=None, ATELIER_TORCH_INDEX="https://download.pytorch.org/whl/cpu")
    assert out.endswith("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
