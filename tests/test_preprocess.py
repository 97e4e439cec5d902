"""Control-image preprocessors: canny offline, the arbiter path, fast clear failures, and fake local weights."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.runtime.arbiter import Arbiter
from engine.runtime.control import CONTROL_TYPES
from engine.runtime.control.preprocess import (
    SPECS,
    WORKSPACE_BYTES,
    Preprocessor,
    _detect_resolution,
    hub_unreachable,
)
from engine.runtime.diffusion.errors import GenerationFailed, InvalidRequest
from engine.runtime.managed import Managed, ModelNotAvailable

WEIGHTED = ["depth", "openpose", "lineart", "softedge", "scribble"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may wait on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _rect(w: int = 128, h: int = 64, box: tuple[int, int, int, int] = (32, 16, 96, 48)) -> Image.Image:
    """A white image with a filled dark rectangle."""
    img = Image.new("RGB", (w, h), (255, 255, 255))
    ImageDraw.Draw(img).rectangle(box, fill=(20, 40, 60))
    return img


def _pre(kind: str, tmp_path: Path, **kw) -> Preprocessor:
    return Preprocessor(kind, tmp_path / "models", cache_dir=tmp_path / "hf-cache", **kw)


def test_specs_cover_every_control_type_and_implement_managed(tmp_path):
    assert set(SPECS) == set(CONTROL_TYPES)
    for kind in CONTROL_TYPES:
        pre = _pre(kind, tmp_path)
        assert isinstance(pre, Managed)
        assert pre.kind == "preprocessor" and pre.control_type == kind
        assert pre.name == f"preprocess-{kind}"
        assert not pre.loaded
    assert _pre("canny", tmp_path).estimate_bytes() == 0
    assert _pre("depth", tmp_path).estimate_bytes() > 100 * 1024 * 1024  # rough figure before download


def test_canny_edges_on_rectangle_border(tmp_path):
    pre = _pre("canny", tmp_path)
    pre.load("cpu")
    assert pre.loaded
    out = pre.run(_rect(), resolution=64)
    assert out.mode == "RGB" and out.size == (128, 64)
    edges = np.asarray(out)[..., 0]
    assert set(np.unique(edges)) <= {0, 255}  # at the native size the map is binary
    assert edges[20:44, 30:35].max() == 255  # left border of the rectangle
    assert edges[20:44, 94:99].max() == 255  # right border
    assert edges[13:19, 40:88].max() == 255  # top border
    assert edges[24:40, 44:84].max() == 0  # inside the rectangle
    assert edges[:, :24].max() == 0 and edges[:, 104:].max() == 0  # plain background
    other = np.asarray(pre.run(_rect(box=(8, 8, 40, 56)), resolution=64))
    assert not np.array_equal(other, np.asarray(out))


def test_canny_resizes_back_to_odd_input_size(tmp_path):
    pre = _pre("canny", tmp_path)
    pre.load("cpu")
    img = _rect(101, 67, box=(25, 17, 75, 50)).convert("RGBA")
    out = pre.run(img, resolution=128)
    assert out.size == (101, 67) and out.mode == "RGB"
    a = np.asarray(out)
    assert set(np.unique(a)) <= {0, 255}  # line maps are re-binarised after resizing back
    assert a[20:47, 22:29].max() == 255  # left border survives the resize
    assert a[25:42, 32:68].max() == 0 and a[:, :18].max() == 0


def test_canny_keeps_thin_edges_when_shrinking_back(tmp_path):
    pre = _pre("canny", tmp_path)
    pre.load("cpu")
    out = np.asarray(pre.run(_rect(64, 64, box=(16, 16, 47, 47)), resolution=512))
    assert out.shape == (64, 64, 3) and set(np.unique(out)) <= {0, 255}
    for strip in (out[20:44, 13:20], out[20:44, 44:51], out[13:20, 20:44], out[44:51, 20:44]):
        assert strip.max() == 255  # each border of the rectangle survives an 8x shrink
    assert out[22:42, 22:42].max() == 0 and out[:8].max() == 0


def test_run_needs_load_and_checks_input(tmp_path):
    pre = _pre("canny", tmp_path)
    with pytest.raises(GenerationFailed, match="preprocess-canny is not loaded"):
        pre.run(_rect())
    pre.load("cpu")
    with pytest.raises(InvalidRequest, match="resolution must be 64..2048"):
        pre.run(_rect(), resolution=10)
    with pytest.raises(InvalidRequest, match="at least 8x8"):
        pre.run(Image.new("RGB", (4, 100)))
    with pytest.raises(InvalidRequest, match="PIL image"):
        pre.run(np.zeros((8, 8, 3)))  # type: ignore[arg-type]
    pre.unload()
    assert not pre.loaded
    with pytest.raises(GenerationFailed, match="not loaded"):
        pre.run(_rect())


def test_unknown_kind_lists_choices(tmp_path):
    with pytest.raises(InvalidRequest, match="unknown preprocessor 'pose'.*canny, depth, openpose"):
        Preprocessor("pose", tmp_path)


def test_detect_resolution_bounds_wide_images():
    assert _detect_resolution((512, 512), 512) == 512
    assert _detect_resolution((4000, 500), 512) == 256  # long side kept near 2048
    assert _detect_resolution((10000, 10), 512) == 64


async def test_loads_through_the_arbiter(tmp_path):
    arbiter = Arbiter(budget_bytes=64 * 1024 * 1024, device="cpu")
    pre = _pre("canny", tmp_path, name="canny-pre")
    arbiter.register(pre)
    async with arbiter.use("canny-pre") as p:
        assert p is pre and p.loaded
        out = p.run(_rect(), resolution=64)
    assert out.size == (128, 64)
    assert arbiter.stats()["loads"] == 1
    assert await arbiter.unload("canny-pre")
    assert not pre.loaded
    await arbiter.close()


@pytest.mark.parametrize("kind", WEIGHTED)
def test_weighted_types_fail_fast_offline(kind, tmp_path):
    pre = _pre(kind, tmp_path)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailable) as info:
        pre.load("cpu")
    assert time.perf_counter() - start < 3
    msg = str(info.value)
    assert f"the {kind} preprocessor" in msg
    assert SPECS[kind].files[0] in msg and "lllyasviel/Annotators" in msg
    assert "unreachable" in msg and "HF_HUB_OFFLINE" in msg
    assert not pre.loaded


async def test_weighted_failure_through_the_arbiter(tmp_path):
    arbiter = Arbiter(budget_bytes=4 * 1024**3, device="cpu")
    arbiter.register(_pre("openpose", tmp_path))
    events = []
    arbiter.subscribe(events.append)
    with pytest.raises(ModelNotAvailable, match="body_pose_model.pth"):
        async with arbiter.use("preprocess-openpose"):
            pass
    assert events[-1].kind == "failed"
    await arbiter.close()


def test_unreachable_hub_fails_fast_without_retries(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert hub_unreachable() is not None
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailable, match=r"lineart preprocessor needs sk_model.pth .*unreachable"):
        _pre("lineart", tmp_path).load("cpu")
    assert time.perf_counter() - start < 5


def test_downloads_disabled(tmp_path):
    with pytest.raises(ModelNotAvailable, match="ControlNetHED.pth .*downloads are disabled"):
        _pre("scribble", tmp_path, download=False).load("cpu")


# --- the weighted path end to end, with random weights saved under the real file names -------------------------


def _hed_weights(path: Path) -> Path:
    import torch

    import engine  # noqa: F401 - torchvision fix before controlnet_aux
    from engine.runtime.control.preprocess import _aux

    _aux()
    from controlnet_aux.hed import ControlNetHED_Apache2

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ControlNetHED_Apache2().state_dict(), path)
    return path


def test_hed_from_models_dir_folder(tmp_path):
    weights = _hed_weights(tmp_path / "models" / "annotators" / "ControlNetHED.pth")
    soft = _pre("softedge", tmp_path, annotators="annotators")
    assert soft.estimate_bytes() == weights.stat().st_size + WORKSPACE_BYTES
    soft.load("cpu")
    assert soft.loaded
    assert next(soft._detector.netNetwork.parameters()).device.type == "cpu"
    a = soft.run(_rect(), resolution=64)
    b = soft.run(_rect(box=(4, 4, 30, 60)), resolution=64)
    assert a.size == (128, 64) and a.mode == "RGB"
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    scribble = _pre("scribble", tmp_path, annotators="annotators")
    scribble.load("cpu")
    s = np.asarray(scribble.run(_rect(), resolution=64))
    assert s.shape == (64, 128, 3) and set(np.unique(s)) <= {0, 255}
    soft.unload()
    assert not soft.loaded


def test_hed_from_the_hub_cache(tmp_path):
    cache = tmp_path / "hf-cache"
    commit = "0" * 40
    repo = cache / "models--lllyasviel--Annotators"
    _hed_weights(repo / "snapshots" / commit / "ControlNetHED.pth")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    pre = _pre("softedge", tmp_path)
    pre.load("cpu")
    out = pre.run(_rect(90, 70), resolution=64)
    assert out.size == (90, 70)


def test_lineart_from_absolute_folder_and_corrupt_file(tmp_path):
    import torch

    from engine.runtime.control.preprocess import _aux

    _aux()
    from controlnet_aux.lineart import Generator

    folder = tmp_path / "lineart-weights"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(Generator(3, 1, 3).state_dict(), folder / "sk_model.pth")
    (folder / "sk_model2.pth").write_bytes(b"not a checkpoint")
    pre = _pre("lineart", tmp_path, annotators=str(folder))
    with pytest.raises(ModelNotAvailable, match="lineart preprocessor could not load .*sk_model2.pth"):
        pre.load("cpu")
    assert not pre.loaded
    torch.save(Generator(3, 1, 3).state_dict(), folder / "sk_model2.pth")
    pre.load("cpu")
    out = pre.run(_rect(), resolution=64)
    assert out.size == (128, 64) and out.mode == "RGB"
    assert np.asarray(out).std() > 0
