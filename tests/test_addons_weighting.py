"""Prompt weighting (compel), textual-inversion embeddings and VAE choice on the tiny pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.presets import ImagePreset
from engine.runtime.diffusion import DiffusionModel, InvalidRequest, build_request
from engine.runtime.diffusion.multi import compat_key
from engine.runtime.diffusion.testmodels_addons import write_tiny_embedding, write_tiny_vae
from engine.runtime.diffusion.weighting import encode, parse


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def run(model: DiffusionModel, **fields) -> list[Image.Image]:
    fields = {"prompt": "a red fox in snow", "seed": 7, "safety": "off"} | fields
    return model.generate(model.request(**fields))


@pytest.fixture(scope="session")
def tiny_embedding(tiny_models_dir: Path) -> Path:
    return write_tiny_embedding(tiny_models_dir / "tiny-ti" / "fox.safetensors")


@pytest.fixture(scope="session")
def tiny_vae(tiny_models_dir: Path) -> Path:
    return write_tiny_vae(tiny_models_dir / "tiny-vae-alt")


def test_parse_a1111_syntax() -> None:
    assert parse("a (cat:1.3) on a mat") == [("a ", 1.0), ("cat", 1.3), (" on a mat", 1.0)]
    assert parse("a [cat]") == [("a ", 1.0), ("cat", 0.9091)]
    assert parse("((red)) sky") == [("red", 1.21), (" sky", 1.0)]
    assert parse(r"a \(literal\) x") == [("a (literal) x", 1.0)]
    assert parse("a (b [c]:1.5)") == [("a ", 1.0), ("b ", 1.5), ("c", 1.3636)]
    for bad, why in (("a (cat", "unclosed"), ("a cat)", "unbalanced"), ("(cat:9)", "outside")):
        with pytest.raises(ValueError, match=why):
            parse(bad)


def test_weighted_prompt_changes_conditioning_and_pixels(tiny_sd_model) -> None:
    pipe = tiny_sd_model._pipes["txt2img"]
    plain = encode(pipe, "sd15", ["a red fox"], [""])["prompt_embeds"]
    heavy = encode(pipe, "sd15", ["a (red:1.6) fox"], [""])["prompt_embeds"]
    same = encode(pipe, "sd15", ["a (red:1.0) fox"], [""])["prompt_embeds"]
    assert plain.shape == heavy.shape
    assert not torch.allclose(plain, heavy)
    assert torch.allclose(plain, same, atol=1e-5)
    base = px(run(tiny_sd_model, prompt="a red fox")[0])
    weighted = px(run(tiny_sd_model, prompt="a (red:1.6) fox")[0])
    down = px(run(tiny_sd_model, prompt="a [red] fox")[0])
    assert not np.array_equal(weighted, base)
    assert not np.array_equal(down, base)
    assert np.array_equal(px(run(tiny_sd_model, prompt="a (red:1.6) fox")[0]), weighted)  # same seed


def test_weighted_sdxl_renders_and_differs(tiny_sdxl_model) -> None:
    base = px(run(tiny_sdxl_model, prompt="a red fox", negative="blur")[0])
    weighted = px(run(tiny_sdxl_model, prompt="a (red:1.8) fox", negative="[blur]")[0])
    assert weighted.shape == base.shape
    assert not np.array_equal(weighted, base)


def test_flux_refuses_weighting_with_a_clear_error(tiny_settings) -> None:
    preset = {"name": "f", "model": "x", "family": "flux", "steps": 4, "width": 64, "height": 64}
    with pytest.raises(InvalidRequest, match="prompt weighting .* not flux"):
        build_request(preset, tiny_settings.generation, prompt="a (cat:1.3)", seed=1)
    assert build_request(preset, tiny_settings.generation, prompt=r"a \(cat\)", seed=1).prompt
    with pytest.raises(InvalidRequest, match="unclosed"):
        build_request({**preset, "family": "sd15"}, tiny_settings.generation, prompt="a (cat", seed=1)


def test_weighted_requests_never_batch(tiny_sd_model) -> None:
    a = tiny_sd_model.request(prompt="a cat", seed=1)
    b = tiny_sd_model.request(prompt="a (cat:1.2)", seed=1)
    assert compat_key(a) is not None and compat_key(b) is None


def test_embedding_token_resolves_changes_output_and_unloads(tiny_sd_model, tiny_embedding) -> None:
    pipe = tiny_sd_model._pipes["txt2img"]
    vocab = len(pipe.tokenizer)
    base = px(run(tiny_sd_model, prompt="a <fox-ti> in snow")[0])
    emb = [(str(tiny_embedding), "<fox-ti>")]
    with_ti = px(run(tiny_sd_model, prompt="a <fox-ti> in snow", embeddings=emb)[0])
    tid = pipe.tokenizer.convert_tokens_to_ids("<fox-ti>")
    assert tid == vocab  # one new token, appended
    assert pipe.tokenizer("a <fox-ti>").input_ids.count(tid) == 1
    from safetensors.torch import load_file

    vector = load_file(str(tiny_embedding))["emb_params"][0]
    assert torch.allclose(pipe.text_encoder.get_input_embeddings().weight[tid], vector)
    assert not np.array_equal(with_ti, base)
    weighted = px(run(tiny_sd_model, prompt="a (<fox-ti>:1.4) in snow", embeddings=emb)[0])
    assert not np.array_equal(weighted, with_ti)  # compel sees the embedding token too
    assert np.array_equal(px(run(tiny_sd_model, prompt="a <fox-ti> in snow")[0]), base)
    assert len(pipe.tokenizer) == vocab and tiny_sd_model.addons.embeddings == ()


def test_missing_embedding_and_duplicate_token_are_clear(tiny_sd_model, tiny_embedding, tmp_path) -> None:
    from engine.runtime.diffusion import ModelNotAvailable

    with pytest.raises(ModelNotAvailable, match="embedding"):
        run(tiny_sd_model, embeddings=[(str(tmp_path / "none.safetensors"), "<x>")])
    with pytest.raises(InvalidRequest, match="more than once"):
        run(tiny_sd_model, embeddings=[(str(tiny_embedding), "<x>"), (str(tiny_embedding), "<x>")])


def test_vae_swap_loads_changes_pixels_and_restores(tiny_sd_model, tiny_vae) -> None:
    own = tiny_sd_model._pipes["txt2img"].vae
    base = px(run(tiny_sd_model)[0])
    swapped = px(run(tiny_sd_model, vae=str(tiny_vae))[0])
    assert tiny_sd_model._pipes["txt2img"].vae is not own
    assert tiny_sd_model.addons.vae == str(tiny_vae)
    assert np.abs(swapped - base).mean() > 0.5
    img2img = run(tiny_sd_model, vae=str(tiny_vae), init_image=Image.new("RGB", (64, 64), "red"), strength=0.5)
    assert img2img[0].size == (64, 64)
    assert np.array_equal(px(run(tiny_sd_model)[0]), base)
    assert tiny_sd_model._pipes["txt2img"].vae is own


def test_preset_fields_reach_the_request(tiny_settings, tiny_embedding, tiny_vae) -> None:
    preset = ImagePreset(
        name="p", model="m", family="sd15", width=64, height=64,
        embeddings=[{"path": str(tiny_embedding), "token": "<fox-ti>"}], vae=str(tiny_vae),
    ).model_dump()
    req = build_request(preset, tiny_settings.generation, prompt="a <fox-ti>", seed=1)
    assert req.embeddings == [(str(tiny_embedding), "<fox-ti>")] and req.vae == str(tiny_vae)
    from engine.remote.protocol import decode_request, encode_request

    again = decode_request(encode_request(req))
    assert again.embeddings == req.embeddings and again.vae == req.vae
    with pytest.raises(ValueError, match="token"):
        ImagePreset(name="p", model="m", family="sd15", embeddings=[{"path": "x", "token": "two words"}])


def test_sdxl_embedding_loads_into_both_encoders(tiny_sdxl_model, tiny_models_dir) -> None:
    emb = write_tiny_embedding(tiny_models_dir / "tiny-ti" / "fox-xl.safetensors", sdxl=True)
    sd15_emb = write_tiny_embedding(tiny_models_dir / "tiny-ti" / "fox.safetensors")
    pipe = tiny_sdxl_model._pipes["txt2img"]
    run(tiny_sdxl_model, prompt="a <xl-ti>", embeddings=[(str(emb), "<xl-ti>")])
    assert pipe.tokenizer.convert_tokens_to_ids("<xl-ti>") == pipe.tokenizer_2.convert_tokens_to_ids("<xl-ti>")
    with pytest.raises(InvalidRequest, match="not an SDXL embedding"):
        run(tiny_sdxl_model, prompt="a <xl-ti>", embeddings=[(str(sd15_emb), "<xl-ti>")])
    run(tiny_sdxl_model, prompt="a x")
    assert "<xl-ti>" not in pipe.tokenizer.get_vocab() and "<xl-ti>" not in pipe.tokenizer_2.get_vocab()
