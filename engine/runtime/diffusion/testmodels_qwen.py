"""Tiny random-weight Qwen-Image-Edit(-Plus) pipelines, built offline the way diffusers' own tests build them.

The Qwen2.5-VL text encoder reads the source images through a Qwen2VLProcessor whose tokenizer is the tiny
byte-level one (testmodels_qwen_tok) and whose image processor caps the vision tower at a few patches.
"""

from __future__ import annotations

from pathlib import Path

from engine.runtime.diffusion.testmodels import _build
from engine.runtime.diffusion.testmodels_qwen_tok import tiny_qwen_tokenizer

VL_MAX_PIXELS = 56 * 56  # the tiny vision tower sees at most 2x2 merged patches per image
_HIDDEN = 16


def _processor(tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": VL_MAX_PIXELS, "longest_edge": VL_MAX_PIXELS}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=tokenizer.chat_template,
    )


def _text_encoder(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    names = ("image_pad", "video_pad", "vision_start", "vision_end", "endoftext")
    ids = {n: tokenizer.convert_tokens_to_ids(f"<|{n}|>") for n in names}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": _HIDDEN, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
            "bos_token_id": ids["endoftext"], "eos_token_id": ids["endoftext"], "pad_token_id": ids["endoftext"],
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        },
        vision_config={"depth": 2, "hidden_size": _HIDDEN, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": _HIDDEN, "fullatt_block_indexes": [1]},
        image_token_id=ids["image_pad"], video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
    )  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(config)


def _components() -> dict[str, object]:
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    z_dim = 4
    tokenizer = tiny_qwen_tokenizer(model_max_length=1024)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * z_dim, out_channels=z_dim, num_layers=2, attention_head_dim=16,
        num_attention_heads=3, joint_attention_dim=_HIDDEN, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )  # fmt: skip
    vae = AutoencoderKLQwenImage(
        base_dim=2, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
    )  # fmt: skip
    return {
        "transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": _text_encoder(tokenizer), "tokenizer": tokenizer, "processor": _processor(tokenizer),
    }  # fmt: skip


def _save(pipeline: str):
    def save(out: Path) -> None:
        import diffusers

        getattr(diffusers, pipeline)(**_components()).save_pretrained(out, safe_serialization=True)

    return save


def ensure_tiny_qwen_edit(path: Path) -> Path:
    """Build (once) a tiny random QwenImageEditPipeline (one source image) at `path`."""
    return _build(Path(path), "qwen-edit", _save("QwenImageEditPipeline"))


def ensure_tiny_qwen_edit_plus(path: Path) -> Path:
    """Build (once) a tiny random QwenImageEditPlusPipeline (one to three source images) at `path`."""
    return _build(Path(path), "qwen-edit-plus", _save("QwenImageEditPlusPipeline"))
