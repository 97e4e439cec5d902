"""`atelier chat --demo --json`: a subprocess round trip with the offline demo models."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from engine.runtime.diffusion.png import read_png_meta

ROOT = Path(__file__).resolve().parent.parent


def readme_first_request() -> str:
    """The first request the README shows typed into the demo chat ("you> ...")."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("you> "):
            return line.removeprefix("you> ").strip()
    raise AssertionError("the README shows no demo request")


def test_the_readmes_first_demo_request_draws_an_image(tmp_path, tiny_models_dir):
    config = tmp_path / "config.json"
    paths = {"data_dir": str(tmp_path / "data"), "demo_models": str(tiny_models_dir / "demo")}
    config.write_text(json.dumps({"paths": paths}))
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "chat", "--demo", "--json"],
        input=readme_first_request() + "\n", capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    (turn,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [c["name"] for c in turn["tool_calls"]] == ["generate"], proc.stderr[-2000:]
    (job,) = turn["jobs"]
    assert job["state"] == "done" and job["images"]
    for path in job["images"]:
        assert Image.open(path).size == (64, 64)
    assert "lighthouse" in read_png_meta(Path(job["images"][0]))["atelier"]["prompt"]


def test_json_round_trip_with_demo_models(tmp_path, tiny_models_dir):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "paths": {"data_dir": str(tmp_path / "data"), "demo_models": str(tiny_models_dir / "demo")},
                "agent": {"max_tool_calls": 2, "max_wall_s": 60},
                "llm": {"max_tokens": 96},
            }
        )
    )
    requests = [
        "/imagine a red fox in the snow",
        json.dumps({"text": "a lighthouse in watercolor, moody"}),
        "/history fox",
        json.dumps({"nope": 1}),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "chat", "--demo", "--json"],
        input="\n".join(requests) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert "demo mode" in proc.stderr.lower()
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == len(requests), proc.stderr[-2000:]

    imagine, turn, history, bad = out
    image_path = Path(imagine["output"].splitlines()[0])
    assert image_path.is_file() and Image.open(image_path).size == (64, 64)
    assert read_png_meta(image_path)["atelier"]["prompt"].startswith("a red fox in the snow")

    assert set(turn) >= {"reply", "tool_calls", "job_ids", "jobs", "images", "follow_ups", "stopped"}
    assert isinstance(turn["reply"], str) and turn["reply"]
    whitelist = {"generate", "apply_style", "search_history", "enhance_prompt", "critique", "(invalid)"}
    for call in turn["tool_calls"]:
        assert call["name"] in whitelist and isinstance(call["args"], dict)
    for job in turn["jobs"]:
        assert job["state"] in ("done", "failed", "cancelled")
        assert all(Path(p).is_file() for p in job["images"])

    assert "fox" in history["output"]
    assert "text" in bad["error"]
    assert proc.returncode == 1  # one bad line is reported in the exit status
