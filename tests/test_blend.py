"""/blend (issue 15): several reference images, one IP-Adapter embedding with a weight per image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.remote.protocol import decode_request, encode_request
from engine.runtime.diffusion.guidance import ReferenceSpec
from tests.test_control_engine import ADAPTER, gen, shapes

WARM = Image.new("RGB", (64, 64), (240, 120, 20))


@pytest.fixture(scope="session")
def control_paths(tiny_models_dir, tiny_sd_path, tiny_sdxl_path):
    from engine.runtime.diffusion.testmodels_control import ensure_control_demo_models

    return ensure_control_demo_models(tiny_models_dir, tiny_sd_path, tiny_sdxl_path)


def blend(path, images, weights=(), **kw) -> ReferenceSpec:
    first, *others = images
    return ReferenceSpec(image=first, others=others, weights=list(weights), adapter={"model": str(path), **ADAPTER},
                         scale=1.0, **kw)  # fmt: skip


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_blend_weights_mix_the_reference_images(family, tiny_sd_model, tiny_sdxl_model, control_paths):
    model = tiny_sd_model if family == "sd15" else tiny_sdxl_model
    path = control_paths[f"ip-adapter-{family}"]
    cold = shapes("disc")
    warm_only = gen(model, reference=blend(path, [WARM]))
    cold_only = gen(model, reference=blend(path, [cold]))
    # A weight of 0 leaves an image out exactly: the blend path gives the single-image pixels.
    assert np.array_equal(gen(model, reference=blend(path, [WARM, cold], [1.0, 0.0])), warm_only)
    assert np.array_equal(gen(model, reference=blend(path, [WARM, cold], [0.0, 2.0])), cold_only)
    even = gen(model, reference=blend(path, [WARM, cold]))
    leaning = gen(model, reference=blend(path, [WARM, cold], [1.0, 0.25]))
    assert np.abs(even - warm_only).mean() > 0.5 and np.abs(even - cold_only).mean() > 0.5
    assert np.abs(leaning - warm_only).mean() < np.abs(even - warm_only).mean()  # closer to the heavier one
    three = gen(model, reference=blend(path, [WARM, cold, shapes("box")], [1, 1, 1]))
    assert np.abs(three - even).mean() > 0.5
    gen(model)  # leave the shared model plain


def test_blend_specs_validate_travel_and_record_their_weights(control_paths):
    from engine.runtime.diffusion.request import GenerationRequest

    path = control_paths["ip-adapter-sd15"]
    with pytest.raises(ValueError, match="3 weights for 2 reference images"):
        blend(path, [WARM, WARM], [1, 1, 1])
    with pytest.raises(ValueError, match="between 0 and 2 and not all 0"):
        blend(path, [WARM, WARM], [0, 0])
    with pytest.raises(ValueError, match="between 0 and 2"):
        blend(path, [WARM, WARM], [1, 3])
    with pytest.raises(ValueError, match="at most 4"):
        blend(path, [WARM] * 6)
    req = GenerationRequest(prompt="x", width=64, height=64, reference=blend(path, [WARM, shapes("box")], [1, 0.5]))
    assert req.params()["reference"]["weights"] == [1, 0.5]
    back = decode_request(encode_request(req))
    assert back.params() == req.params() and len(back.reference.others) == 1
    assert np.array_equal(np.asarray(back.reference.others[0]), np.asarray(shapes("box")))
    assert "weights" not in blend(path, [WARM]).params()  # one image: the plain reference, as before
