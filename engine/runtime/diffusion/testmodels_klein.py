"""A tiny random-weight FLUX.2 Klein (Flux2KleinPipeline), built offline the way diffusers' own tests build it."""

from __future__ import annotations

from pathlib import Path

from engine.runtime.diffusion.testmodels import _build
from engine.runtime.diffusion.testmodels_qwen_tok import tiny_qwen_tokenizer

# the pipeline reads hidden states 9, 18 and 27 of its Qwen3 text encoder, as with the real one
KLEIN_TEXT_LAYERS = 28
_HIDDEN = 16


def _save_klein(out: Path) -> None:
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = tiny_qwen_tokenizer()
    text = Qwen3Config(
        hidden_size=_HIDDEN, intermediate_size=16, num_hidden_layers=KLEIN_TEXT_LAYERS, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=512,
    )  # fmt: skip
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * _HIDDEN, timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False,
    )  # fmt: skip  # in_channels: 4 latent channels x the 2x2 patchify
    vae = AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=Qwen3ForCausalLM(text),
        tokenizer=tokenizer, transformer=transformer, is_distilled=True,
    )  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)


def ensure_tiny_klein(path: Path) -> Path:
    """Build (once) a tiny random Flux2KleinPipeline at `path`; returns the path."""
    return _build(Path(path), "klein", _save_klein)
