"""bench.fullsize without full-size models: variant parsing and the whole CPU report on the tiny SD pipeline."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from bench import fullsize, fullsize_models


def test_parse_variant_names_each_fast_path():
    assert fullsize.parse_variant("fp16+cl+compile") == {
        "name": "fp16+cl+compile", "dtype": "float16", "channels_last": True, "compile": True,
    }  # fmt: skip
    assert fullsize.parse_variant("bf16") == {
        "name": "bf16", "dtype": "bfloat16", "channels_last": False, "compile": False,
    }  # fmt: skip
    for bad in ("fp8", "fp16+tiling", "cl+fp16"):
        with pytest.raises(SystemExit, match=re.escape(f"bad variant '{bad}'")):
            fullsize.parse_variant(bad)


async def test_cpu_report_on_the_tiny_pipeline(monkeypatch, tiny_sd_path, tiny_safety_path):
    built = []

    def ensure(family, dtype_name="float32", root=None):
        built.append((family, dtype_name))
        return tiny_sd_path

    monkeypatch.setattr(fullsize_models, "ensure", ensure)
    monkeypatch.setattr(fullsize_models, "tiny_safety", lambda: tiny_safety_path)
    monkeypatch.setattr(fullsize, "CPU_CASE", {**fullsize.CPU_CASE, "size": 64})
    out = await fullsize.main(argparse.Namespace(device="cpu", repeats=2, sdxl_cpu=False))
    line = json.dumps(out)  # the report is one JSON line
    assert "\n" not in line and json.loads(line) == out
    assert built == [("sd15", "float32")]
    assert (out["bench"], out["device"], out["targets"]) == ("fullsize", "cpu", {"ratio": 1.02})
    (row,) = out["cases"]
    assert "error" not in row, row
    assert (row["variant"], row["family"], row["size"], row["steps"]) == ("fp32", "sd15", "64x64", 2)
    assert row["n"] == 2
    assert row["pixels_equal"] and row["max_pixel_diff"] == 0  # Atelier's job == the raw diffusers call
    assert row["atelier_s"] > 0 and row["raw_s"] > 0
    assert row["ratio"] == pytest.approx(row["atelier_s"] / row["raw_s"], abs=0.02)  # from unrounded medians
    assert set(row["params_m"]) == {"unet", "vae", "text_encoder"}


async def test_a_failing_variant_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(fullsize_models, "ensure", lambda *a, **k: tmp_path / "missing")
    monkeypatch.setattr(fullsize_models, "tiny_safety", lambda: tmp_path / "no-safety")
    row = await fullsize.run_variant("cpu", fullsize.CPU_CASE, fullsize.parse_variant("fp32"), 1)
    assert row["variant"] == "fp32" and row["family"] == "sd15" and row["error"]
