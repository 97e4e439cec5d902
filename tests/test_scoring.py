"""CLIP scores of every result (tiny offline CLIP behind the arbiter), best-of-N, and the determinism check."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from bot.usecases.quality import result_notes
from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Scoring
from engine.core import Engine
from engine.jobs.determinism import check_determinism
from engine.jobs.result import JobResult
from engine.runtime.lane import THREAD_NAME
from engine.runtime.scoring import ClipScorer, ensure_tiny_clip
from engine.store.history import Scope

A = 11
TINY = {"family": "sd15", "steps": 3, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}


@pytest.fixture(scope="session")
def tiny_clip_path(tiny_models_dir: Path) -> Path:
    return ensure_tiny_clip(tiny_models_dir / "tiny-clip")


@pytest.fixture
async def svc(tmp_path, tiny_models_dir, tiny_engines, tiny_clip_path):
    settings = Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60, preview_every_steps=2),
        queue=Queue(batch_window_ms=0),
        scoring=Scoring(clip_model=str(tiny_clip_path)),
    )
    return await tiny_engines(settings, TINY)


async def run(svc: Engine, payload: dict) -> JobResult:
    job = await svc.wait(await svc.submit("generate", payload, user_id=A), timeout_s=120)
    assert job.state == "done", job.error
    out = JobResult.of(job)
    assert out is not None
    return out


def test_the_scorer_gives_one_repeatable_score_per_image(tiny_clip_path):
    scorer = ClipScorer("clip", str(tiny_clip_path))
    scorer.load("cpu")
    try:
        images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "white")]
        first = scorer.score("a red square", images)
        assert len(first) == 3 and all(-100.0 <= s <= 100.0 for s in first)
        assert scorer.score("a red square", images) == first
        assert len(set(first)) == 3  # different pixels, different scores
    finally:
        scorer.unload()
    assert not scorer.loaded


async def test_every_result_is_scored_stored_in_history_and_shown(svc):
    out = await run(svc, {"prompt": "a lighthouse", "preset": "tiny", "seed": 3, "count": 2})
    scores = out.params["clip_scores"]
    assert isinstance(scores, list) and len(scores) == 2
    gen = await svc.store.history.get(out.generation_id, Scope(A))
    assert gen is not None and gen.params["clip_scores"] == scores
    assert f"CLIP {scores[0]:.1f}, {scores[1]:.1f}" in result_notes(out.params)
    scorer = next(s for s in svc.arbiter.snapshot() if s["kind"] == "scorer")
    assert scorer["loads"] == 1  # loaded behind the arbiter, like every model


async def test_on_cpu_the_render_and_its_score_run_in_the_one_compute_thread(svc, monkeypatch):
    from engine.runtime.diffusion.pipeline import DiffusionModel

    threads: dict[str, set[str]] = {"render": set(), "score": set()}

    def spy(owner: type, attr: str, label: str) -> None:
        real = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            threads[label].add(threading.current_thread().name)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, attr, wrapper)

    spy(DiffusionModel, "_call_pipeline", "render")
    spy(ClipScorer, "score", "score")
    for seed in (5, 6):
        await run(svc, {"prompt": "a lighthouse", "preset": "tiny", "seed": seed})
    assert threads["render"] == threads["score"] and len(threads["render"]) == 1
    assert next(iter(threads["render"])).startswith(THREAD_NAME)


async def test_best_of_draws_n_and_orders_them_best_first(svc):
    plain = await run(svc, {"prompt": "a red fox", "preset": "tiny", "seed": 40, "count": 3})
    best = await run(svc, {"prompt": "a red fox", "preset": "tiny", "seed": 40, "best_of": 3})
    assert best.params["best_of"] == 3 and best.params["batch"] == 3 and len(best.images) == 3
    scores = best.params["clip_scores"]
    assert scores == sorted(plain.params["clip_scores"], reverse=True)  # the same three images, best first
    assert best.seeds[0] == plain.seeds[plain.params["clip_scores"].index(max(scores))]
    assert sorted(best.seeds) == plain.seeds
    assert "best of 3" in result_notes(best.params)


async def test_determinism_check_passes_on_cpu(svc):
    report = await check_determinism(svc.store, svc.models, svc.arbiter, svc.settings, "tiny", steps=2)
    assert report.same and len(report.first) == 1 and "deterministic" in report.text()


def test_the_determinism_command_exits_1_on_a_mismatch(tmp_path, tiny_models_dir, monkeypatch):
    config = tmp_path / "config.json"
    data = tmp_path / "data"
    paths = {"data_dir": str(data), "demo_models": str(tiny_models_dir)}
    config.write_text(json.dumps({"paths": paths, "gpu": {"device": "cpu"}}))
    script = (
        "import sys, random\n"
        "from engine.jobs import determinism\n"
        "determinism.checksum = lambda image: str(random.random())\n"  # every render looks different
        "from bot.cli import main\n"
        f"sys.exit(main(['--config', {str(config)!r}, 'check', 'determinism', 'demo', '--demo', '--steps', '1']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "NOT deterministic" in done.stdout
