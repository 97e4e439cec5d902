"""`atelier doctor` on this machine (a subprocess), plus its advice and GPU checks with fake devices."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import llama_cpp
import torch

from bot.doctor import check_llama, check_token, check_vram, lenient_settings, mask
from bot.doctor_advice import candidates, recommend
from engine.config import Gpu, Settings
from engine.store.seed import load_presets_file
from tests.models_support import closed_port, make_atelier

PRESETS = Path(__file__).resolve().parent.parent / "prompts" / "presets.toml"
BROKEN = {
    "queue": {
        "backend": "redis",
        "redis_url": f"redis://:hunter2@127.0.0.1:{closed_port()}/0",
        "max_per_user": "two",
    },
    "bogus_key": 1,
}


def _shipped() -> tuple[list, list]:
    images, llms = load_presets_file(PRESETS)
    dump = [p.model_dump() for p in images], [p.model_dump() for p in llms]
    return candidates(dump[0], llm=False), candidates(dump[1], llm=True)


def test_doctor_reports_every_problem_with_its_fix(tmp_path):
    at = make_atelier(tmp_path, BROKEN)
    proc = at.run("doctor")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith("  ")}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert lines["device"].split()[2] == device
    if device == "cpu":
        assert "none (no CUDA device)" in lines["vram"]
    assert " free of " in lines["ram"]
    offload = llama_cpp.llama_supports_gpu_offload()
    assert ("built with GPU offload" if offload else "no GPU offload") in lines["llama.cpp"]
    assert ("CUDA not available" if not torch.cuda.is_available() else "available") in lines["torch"]
    assert "unknown key 'bogus_key' - fix: remove 'bogus_key' from" in out
    assert "invalid value for 'queue.max_per_user'" in out and "fix: correct 'queue.max_per_user'" in out
    assert "generation.default_preset = 'sdxl': missing" in out and "fix: atelier models pull sdxl" in out
    assert "llm.preset = 'qwen2.5-vl-7b': missing" in out and "fix: atelier models pull qwen2.5-vl-7b" in out
    assert "cannot reach Redis at queue.redis_url = redis://:***@127.0.0.1" in out and "hunter2" not in out
    assert 'set queue.backend = "local"' in out
    assert "DISCORD_TOKEN  not set" in out and "fix: export DISCORD_TOKEN=..." in out
    assert "recommend" in out and ("slow" in out if device == "cpu" else "llm.preset" in out)
    problems = [ln for ln in out.splitlines() if "PROBLEM" in ln]
    assert len(problems) == 6 and all(" - fix: " in ln for ln in problems)


def test_doctor_json_has_every_field_and_never_prints_the_token(tmp_path):
    at = make_atelier(tmp_path, BROKEN)
    proc = at.run("doctor", "--json", extra={"DISCORD_TOKEN": "tok-SECRET-123"})
    assert proc.returncode == 1 and "tok-SECRET-123" not in proc.stdout + proc.stderr
    got = json.loads(proc.stdout)
    for key in ("device", "vram", "ram", "llama_cpp", "torch", "models", "config", "redis", "discord_token"):
        assert key in got, key
    assert got["ok"] is False and got["discord_token"] == {
        "ok": True,
        "message": "set",
        "fix": "",
        "set": True,
    }
    assert got["device"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert got["llama_cpp"]["gpu_offload"] is bool(llama_cpp.llama_supports_gpu_offload())
    assert got["torch"]["cuda_available"] is torch.cuda.is_available()
    assert got["torch"]["cuda_version"] == torch.version.cuda
    assert {m["preset"]: m["state"] for m in got["models"]} == {"sdxl": "missing", "qwen2.5-vl-7b": "missing"}
    assert [c["ok"] for c in got["config"]] == [False, False]
    assert got["redis"]["ok"] is False and "***" in got["redis"]["url"]
    assert {p["check"] for p in got["problems"]} == {"config", "models", "redis"}
    if not torch.cuda.is_available():
        assert got["recommendation"] | {"message": ""} == {
            "image": "sd15", "llm": "qwen2.5-vl-3b", "fits": "cpu", "budget_mb": None, "message": "",
        }  # fmt: skip


def test_doctor_exits_0_when_nothing_is_broken(tmp_path):
    config = {"generation": {"default_preset": "demo"}, "llm": {"preset": "smollm2-135m"}}
    proc = make_atelier(tmp_path, config).run("doctor", extra={"DISCORD_TOKEN": "x"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problems found" in proc.stdout and "PROBLEM" not in proc.stdout
    assert "generation.default_preset = 'demo': on this machine" in proc.stdout


def test_advice_picks_the_largest_pair_that_fits_the_card():
    images, llms = _shipped()
    current = ("sdxl", "qwen2.5-vl-7b")
    assert [s.name for s in images] == [
        "flux-schnell",
        "sdxl",
        "sdxl-turbo",
        "sd15",
    ]  # demo (vram 0) is never advised
    assert "smollm2-135m" not in [s.name for s in llms]  # a pkg: test model
    big = recommend("cuda", 24 * 1024 - 1024, images, llms, current)
    assert (big.image, big.llm, big.fits) == (
        "sdxl",
        "qwen2.5-vl-7b",
        "pair",
    ) and "already configured" in big.message
    huge = recommend("cuda", 140 * 1024 - 1024, images, llms, current)
    assert (huge.image, huge.llm, huge.fits) == ("flux-schnell", "qwen2.5-vl-7b", "pair")
    mid = recommend("cuda", 12 * 1024 - 1024, images, llms, current)
    assert (mid.image, mid.llm, mid.fits) == ("sd15", "qwen2.5-vl-7b", "pair")
    small = recommend("cuda", 8 * 1024 - 1024, images, llms, current)  # the 8 GB pair: sd15 + qwen2.5-vl-3b
    assert (small.image, small.llm, small.fits) == ("sd15", "qwen2.5-vl-3b", "pair")
    swap = recommend("cuda", 5000, images, llms, current)  # each fits alone, not both: they take turns
    assert (swap.image, swap.llm, swap.fits) == ("sd15", "qwen2.5-vl-3b", "each") and "swaps" in swap.message
    tiny = recommend("cuda", 3000, images, llms, current)
    assert tiny.fits == "none" and "--demo" in tiny.message
    cpu = recommend("cpu", None, images, llms, current)
    assert (cpu.image, cpu.llm, cpu.fits) == ("sd15", "qwen2.5-vl-3b", "cpu")
    assert "--demo" in cpu.message and "slow" in cpu.message


def test_cuda_vram_budget_and_a_cpu_only_llama_cpp_beside_a_gpu(monkeypatch):
    gib = 1024**3
    cuda = SimpleNamespace(mem_get_info=lambda: (20 * gib, 24 * gib), get_device_name=lambda: "Fake RTX")
    check, budget = check_vram(Settings(gpu=Gpu(reserve_mb=1024)), "cuda", SimpleNamespace(cuda=cuda))
    assert budget == 24 * 1024 - 1024 and check.data["free_mb"] == 20 * 1024 and "Fake RTX" in check.message
    _, fixed = check_vram(Settings(gpu=Gpu(vram_budget_mb=5000)), "cuda", SimpleNamespace(cuda=cuda))
    assert fixed == 5000
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    bad = check_llama("cuda")
    assert not bad.ok and "DGGML_CUDA=on" in bad.fix
    assert check_llama("cpu").ok


def test_lenient_settings_keep_the_valid_keys_and_secrets_stay_hidden(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"queue": {"backend": "redis", "max_per_user": "two"}, "nope": {"x": 1}}))
    s = lenient_settings(path)
    assert s.queue.backend == "redis" and s.queue.max_per_user == Settings().queue.max_per_user
    assert mask("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert not check_token().ok
