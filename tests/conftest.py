"""Shared fixtures: tiny random-weight diffusion models built offline once and cached on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from engine.config import Generation, Paths, Settings


def _cache_root() -> Path:
    """Where tiny models are cached between runs (ATELIER_TEST_CACHE overrides)."""
    default = Path(tempfile.gettempdir()) / f"atelier-test-models-{os.getuid()}"
    return Path(os.environ.get("ATELIER_TEST_CACHE", default))


@pytest.fixture(scope="session")
def tiny_models_dir() -> Path:
    """Directory holding the cached tiny models."""
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_sd_path(tiny_models_dir: Path) -> Path:
    """A tiny random SD1.5-family diffusers folder."""
    from engine.runtime.diffusion.testmodels import ensure_tiny_sd

    return ensure_tiny_sd(tiny_models_dir / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_sdxl_path(tiny_models_dir: Path) -> Path:
    """A tiny random SDXL-family diffusers folder (two text encoders)."""
    from engine.runtime.diffusion.testmodels import ensure_tiny_sdxl

    return ensure_tiny_sdxl(tiny_models_dir / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_safety_path(tiny_models_dir: Path) -> Path:
    """A tiny StableDiffusionSafetyChecker + feature extractor folder."""
    from engine.runtime.diffusion.testmodels import ensure_tiny_safety_checker

    return ensure_tiny_safety_checker(tiny_models_dir / "tiny-safety")


@pytest.fixture(scope="session")
def tiny_lora_path(tiny_models_dir: Path, tiny_sd_path: Path) -> Path:
    """A random LoRA .safetensors file for the tiny SD unet."""
    from engine.runtime.diffusion.testmodels import write_tiny_lora

    return write_tiny_lora(tiny_sd_path, tiny_models_dir / "tiny-lora")


@pytest.fixture(scope="session")
def tiny_upscaler_path(tiny_models_dir: Path) -> Path:
    """A tiny random x4 StableDiffusionUpscalePipeline folder."""
    from engine.runtime.diffusion.testmodels import ensure_tiny_upscaler

    return ensure_tiny_upscaler(tiny_models_dir / "tiny-upscaler")


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with small limits suited to 64x64 tiny-model tests (previews every 2 steps)."""
    data = tmp_path_factory.mktemp("atelier-data")
    return Settings(
        paths=Paths(data_dir=str(data)),
        generation=Generation(preview_every_steps=2, max_side=512, max_pixels=256 * 256, max_steps=50),
    )


def _loaded_model(name: str, path: Path, family: str, settings: Settings, safety_path: Path):
    from engine.runtime.diffusion import ClipSafetyChecker, DiffusionModel

    preset = {
        "name": name,
        "model": str(path),
        "family": family,
        "steps": 4,
        "cfg": 5.0,
        "width": 64,
        "height": 64,
    }
    model = DiffusionModel(preset, settings, safety_checker=ClipSafetyChecker(str(safety_path)))
    model.load("cpu")
    return model


@pytest.fixture(scope="session")
def tiny_sd_model(tiny_sd_path: Path, tiny_settings: Settings, tiny_safety_path: Path):
    """A loaded (CPU) DiffusionModel on the tiny SD pipeline with the tiny CLIP safety checker."""
    model = _loaded_model("tiny-sd", tiny_sd_path, "sd15", tiny_settings, tiny_safety_path)
    yield model
    model.close()


@pytest.fixture(scope="session")
def tiny_sdxl_model(tiny_sdxl_path: Path, tiny_settings: Settings, tiny_safety_path: Path):
    """A loaded (CPU) DiffusionModel on the tiny SDXL pipeline with the tiny CLIP safety checker."""
    model = _loaded_model("tiny-sdxl", tiny_sdxl_path, "sdxl", tiny_settings, tiny_safety_path)
    yield model
    model.close()


@pytest.fixture
async def open_store(tmp_path: Path):
    """Factory for stores in tmp_path that are always closed (an unclosed aiosqlite thread hangs exit)."""
    from engine.store import Store

    opened: list[Store] = []

    async def make(name: str = "atelier.db", **kw) -> Store:
        opened.append(await Store.open(tmp_path / name, **kw))
        return opened[-1]

    yield make
    for s in opened:
        await s.close()


@pytest.fixture
async def env(open_store, tmp_path: Path):
    """The tools/agent tests' store: two users' seeded history (tests.agent_support) with the default settings."""
    from tests.agent_support import make_settings, seed_env

    return await seed_env(await open_store(), make_settings(tmp_path))


@pytest.fixture
async def tiny_engines(tiny_sd_path: Path, tiny_safety_path: Path):
    """Factory: a started Engine with a global 'tiny' image preset (`preset` on the tiny SD model); all stopped."""
    from engine.core import Engine

    started: list[Engine] = []

    async def make(settings: Settings, preset: dict, **start_kw) -> Engine:
        start_kw.setdefault("poll_s", 0.05)
        engine = await Engine.start(settings, **start_kw)
        started.append(engine)
        tiny = {**preset, "model": str(tiny_sd_path), "safety_checker": str(tiny_safety_path)}
        await engine.store.presets.save("image", "tiny", tiny)
        return engine

    yield make
    for engine in reversed(started):
        if engine.store.db._w is not None:  # not stopped by the test itself
            await engine.stop()
