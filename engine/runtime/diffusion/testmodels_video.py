"""Tiny random-weight video models built offline: an AnimateDiff MotionAdapter for the tiny SD1.5, a tiny Wan."""

from __future__ import annotations

from pathlib import Path

from engine.runtime.diffusion.testmodels import _build

TINY_MAX_FRAMES = 32  # the adapter's motion_max_seq_length: the most frames it animates at once


def _save_motion_adapter(out: Path) -> None:
    from diffusers import MotionAdapter

    adapter = MotionAdapter(
        block_out_channels=(32, 64),  # the tiny SD1.5 UNet's (testmodels._save_sd)
        motion_layers_per_block=1,  # its layers_per_block
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
        motion_max_seq_length=TINY_MAX_FRAMES,
    )
    adapter.save_pretrained(out, safe_serialization=True)


def ensure_tiny_motion_adapter(path: Path) -> Path:
    """Build (once) a tiny random MotionAdapter at `path` for the tiny SD1.5 pipeline; returns the path."""
    return _build(Path(path), "motion-adapter", _save_motion_adapter)


def _save_wan(out: Path) -> None:
    import shutil

    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

    from engine.runtime.diffusion.testmodels_edit import write_tiny_t5_tokenizer

    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    write_tiny_t5_tokenizer(out / "_t5")
    tokenizer = T5TokenizerFast.from_pretrained(out / "_t5")
    shutil.rmtree(out / "_t5")
    t5 = UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )  # fmt: skip
    pipe = WanPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=UMT5EncoderModel(t5), tokenizer=tokenizer,
    )  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)


def ensure_tiny_wan(path: Path) -> Path:
    """Build (once) a tiny random Wan 2.1 text-to-video pipeline at `path` (diffusers' test sizes)."""
    return _build(Path(path), "wan", _save_wan)
