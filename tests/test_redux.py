"""/blend on FLUX (issue 15): reference images become weighted FLUX Redux tokens, on a tiny offline prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.chat import TerminalChat
from bot.usecases import blend
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.guidance import ReferenceSpec
from engine.store.history import Scope
from tests.test_control_engine import ADAPTER, shapes
from tests.test_control_jobs import GUILD, A, box_image, px, run, settings, svc, upload  # noqa: F401
from tools.context import Attachment

WARM = Image.new("RGB", (48, 48), (240, 120, 20))
COLD = Image.new("RGB", (48, 48), (20, 60, 220))


@pytest.fixture(scope="session")
def redux_paths(tiny_models_dir: Path) -> dict[str, Path]:
    from engine.runtime.diffusion.testmodels_redux import ensure_tiny_flux, ensure_tiny_redux

    return {"flux": ensure_tiny_flux(tiny_models_dir / "tiny-flux"),
            "redux": ensure_tiny_redux(tiny_models_dir / "tiny-redux")}  # fmt: skip


@pytest.fixture(scope="session")
def flux_model(redux_paths, tiny_settings):
    from engine.runtime.diffusion import DiffusionModel

    preset = {"name": "tiny-flux", "model": str(redux_paths["flux"]), "family": "flux", "steps": 3, "cfg": 3.5,
              "width": 64, "height": 64, "redux": str(redux_paths["redux"])}  # fmt: skip
    model = DiffusionModel(preset, tiny_settings, safety_checker=None)
    model.load("cpu")
    yield model
    model.close()


def redux(path: Path, images: list[Image.Image], weights=(), scale: float = 1.0) -> ReferenceSpec:
    first, *others = images
    return ReferenceSpec(image=first, others=others, weights=list(weights), via="redux",
                         adapter={"model": str(path)}, scale=scale)  # fmt: skip


def floats(model, ref: ReferenceSpec | None = None, seed: int = 3) -> np.ndarray:
    """The denoised float image (no uint8 rounding), so small steering differences stay measurable."""
    return model.denoise(model.request(prompt="a fox in snow", seed=seed, reference=ref))[0]


def test_redux_blend_is_seeded_weighted_and_exact_at_weight_zero(flux_model, redux_paths):
    path = redux_paths["redux"]
    plain = floats(flux_model)
    even = floats(flux_model, redux(path, [WARM, COLD]))
    assert flux_model.redux.loaded == str(path)
    assert np.array_equal(even, floats(flux_model, redux(path, [WARM, COLD])))  # same seed, same pixels
    warm_only, cold_only = floats(flux_model, redux(path, [WARM])), floats(flux_model, redux(path, [COLD]))
    # A weight of 0 leaves an image out exactly; weights are relative (2 alone = 1 alone).
    assert np.array_equal(floats(flux_model, redux(path, [WARM, COLD], [1.0, 0.0])), warm_only)
    assert np.array_equal(floats(flux_model, redux(path, [WARM, COLD], [0.0, 2.0])), cold_only)
    leaning = floats(flux_model, redux(path, [WARM, COLD], [1.0, 0.25]))
    assert not np.array_equal(leaning, even) and not np.array_equal(even, plain)
    assert np.abs(leaning - warm_only).mean() < np.abs(even - warm_only).mean()  # closer to the heavier image
    three = floats(flux_model, redux(path, [WARM, COLD, shapes("box")]))
    assert not np.array_equal(three, even)
    weaker = floats(flux_model, redux(path, [WARM, COLD], scale=0.5))  # the scale weakens the image tokens
    assert not np.array_equal(weaker, even)
    req = flux_model.request(prompt="a fox", seed=3, safety="off", reference=redux(path, [WARM, COLD]))
    image = flux_model.generate(req)[0]
    assert image.size == (64, 64) and image.info["atelier_seed"] == 3


def test_redux_prior_is_counted_and_unloaded_with_its_flux_model(redux_paths, tiny_settings):
    from engine.runtime.diffusion import DiffusionModel

    base = {"name": "f", "model": str(redux_paths["flux"]), "family": "flux", "width": 64, "height": 64}
    plain = DiffusionModel(base, tiny_settings, safety_checker=None)
    with_prior = DiffusionModel(base | {"redux": str(redux_paths["redux"])}, tiny_settings, safety_checker=None)
    assert with_prior.estimate_bytes() > plain.estimate_bytes()
    with_prior.load("cpu")
    with_prior.denoise(with_prior.request(prompt="x", seed=1, steps=1, reference=redux(redux_paths["redux"], [WARM])))
    assert with_prior.redux.loaded is not None
    with_prior.unload()
    assert with_prior.redux.loaded is None and with_prior.redux._prior is None


def test_reference_kinds_fit_their_families(redux_paths):
    from engine.runtime.diffusion.request import GenerationRequest

    ip = ReferenceSpec(image=WARM, adapter={"model": "x", **ADAPTER})
    with pytest.raises(ValueError, match="not flux; FLUX takes reference images through Redux"):
        GenerationRequest(prompt="x", family="flux", reference=ip)
    with pytest.raises(ValueError, match="a redux reference does not fit sd15"):
        GenerationRequest(prompt="x", family="sd15", reference=redux(redux_paths["redux"], [WARM]))
    with pytest.raises(ValueError, match="style-only reference needs an IP-Adapter"):
        ReferenceSpec(image=WARM, via="redux", mode="style", adapter={"model": "x"})
    with pytest.raises(ValueError, match="the redux reference lacks model"):
        ReferenceSpec(image=WARM, via="redux", adapter={})
    req = GenerationRequest(prompt="x", family="flux", reference=redux(redux_paths["redux"], [WARM, COLD], [1, 0.5]))
    assert req.params()["reference"] | {"adapter": None} == {
        "mode": "subject", "scale": 1.0, "via": "redux", "adapter": None, "weights": [1, 0.5]
    }  # fmt: skip


def test_presets_without_redux_or_ip_adapter_say_they_cannot_blend(settings):  # noqa: F811
    from engine.runtime.control.models import reference_adapter
    from engine.runtime.diffusion import InvalidRequest

    flux = {"name": "flux-x", "model": "x/flux", "family": "flux"}
    assert reference_adapter(flux | {"redux": "org/redux"}, settings.control) == {"model": "org/redux"}
    with pytest.raises(InvalidRequest, match=r"'flux-x' \(flux\) cannot take reference images or blend.*Redux"):
        reference_adapter(flux, settings.control)
    with pytest.raises(InvalidRequest, match=r"'k' \(kontext\) cannot take reference images or blend"):
        reference_adapter({"name": "k", "model": "demo:tiny-kontext", "family": "kontext"}, settings.control)


async def test_flux_blend_job_runs_through_redux_and_records_its_lineage(svc, settings):  # noqa: F811
    warm = upload(settings, "warm.png", WARM)
    box = upload(settings, "box.png", box_image())
    payload = await blend.blend_payload(svc, [warm, box], user_id=A, guild_id=GUILD, weights="1,0.5",
                                        preset="demo-flux", seed=5)  # fmt: skip
    job = await run(svc, **payload)
    assert job.state == "done", job.error
    ref = job.result["params"]["reference"]
    assert ref["via"] == "redux" and ref["weights"] == [1.0, 0.5] and ref["blend"] == [warm, box]
    again = await run(svc, **payload | {"reference_weights": [0.5, 1.0]})
    assert again.state == "done", again.error
    assert (px(again.result["images"][0]) != px(job.result["images"][0])).any()
    gen = await svc.store.history.get(job.result["generation_id"], Scope(A, GUILD))
    assert gen is not None and gen.params["reference"]["via"] == "redux" and gen.params["reference"]["blend"]
    refused = await blend.blend_payload(svc, [warm, box], user_id=A, guild_id=GUILD, preset="demo-edit")
    queued = await svc.jobs.counts()
    with pytest.raises(InvalidRequest, match=r"'demo-edit' \(kontext\) cannot take reference images or blend"):
        await svc.submit("generate", refused, user_id=A, guild_id=GUILD)  # at submission, not when it runs
    with pytest.raises(InvalidRequest, match=r"'demo-edit' \(kontext\) cannot take reference images"):
        await svc.submit("generate", {"prompt": "x", "preset": "demo-edit", "reference_image": warm}, user_id=A,
                         guild_id=GUILD)  # fmt: skip
    assert await svc.jobs.counts() == queued  # nothing was queued
    chat = TerminalChat(svc, agent=None)  # type: ignore[arg-type]  # /blend needs no agent
    await svc.store.settings.update("user", chat.user_id, preset="demo-edit")  # the saved default is checked too
    chat.pending = [Attachment("a.png", (Path(warm)).read_bytes()), Attachment("b.png", Path(box).read_bytes())]
    with pytest.raises(InvalidRequest, match="cannot take reference images or blend"):
        await chat.command("/blend")


async def test_a_demo_model_is_built_once_then_its_folder_is_remembered(tmp_path, monkeypatch) -> None:
    from engine.runtime.diffusion import testmodels_redux
    from engine.runtime.managed import ModelNotAvailable
    from engine.runtime.models import DemoModels

    built: list[Path] = []
    monkeypatch.setattr(testmodels_redux, "ensure_tiny_flux", lambda root: built.append(root) or root)
    demo = DemoModels(tmp_path)
    first = await demo.resolve("demo:tiny-flux", "test")
    assert await demo.resolve("demo:tiny-flux", "test") == first == str(tmp_path / "tiny-flux")
    assert built == [tmp_path / "tiny-flux"]  # no second check or build on disk
    for _ in range(2):  # an unknown reference is refused each time, never remembered
        with pytest.raises(ModelNotAvailable, match="unknown demo model 'demo:nope'"):
            await demo.resolve("demo:nope", "test")
