"""Tiny random-weight instruction-edit pipelines (FLUX.1 Kontext here; Klein and Qwen beside), built offline."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.runtime.diffusion.testmodels import _build, _text_config, _vocab, tiny_clip_tokenizer
from engine.runtime.diffusion.testmodels_klein import ensure_tiny_klein
from engine.runtime.diffusion.testmodels_qwen import ensure_tiny_qwen_edit, ensure_tiny_qwen_edit_plus

T5_MAX_LENGTH = 64  # the tiny T5's tokenizer length (the pipeline is called with max_sequence_length <= this)


def write_tiny_t5_tokenizer(path: Path) -> None:
    """A character-level T5 (Unigram) tokenizer: <pad> </s> <unk>, "▁" and single characters."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(t, -3.0) for t in _vocab() if not t.startswith("<|") and not t.endswith("</w>")]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(path)


def _save_kontext(out: Path) -> None:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # latent_channels 4 × the 2×2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    tokenizer = tiny_clip_tokenizer(out)
    write_tiny_t5_tokenizer(out / "_t5")
    tokenizer_2 = T5TokenizerFast.from_pretrained(out / "_t5")
    t5 = T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    shutil.rmtree(out / "_t5")
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(t5),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def ensure_tiny_kontext(path: Path) -> Path:
    """Build (once) a tiny random FluxKontextPipeline at `path`; returns the path."""
    return _build(Path(path), "kontext", _save_kontext)


EDIT_DEMO_BUILDERS = {
    "kontext": ensure_tiny_kontext,
    "klein": ensure_tiny_klein,
    "qwen-edit": ensure_tiny_qwen_edit,
    "qwen-edit-plus": ensure_tiny_qwen_edit_plus,
}


def ensure_edit_demo_model(family: str, root: Path) -> Path:
    """The tiny edit model of `family` (a key of EDIT_DEMO_BUILDERS), built once under root/tiny-<family>."""
    return EDIT_DEMO_BUILDERS[family](Path(root) / f"tiny-{family}")
