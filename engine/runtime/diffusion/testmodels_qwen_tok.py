"""A tiny byte-level Qwen tokenizer built offline (FLUX.2 Klein's and Qwen-Image-Edit's tests), no hub needed."""

from __future__ import annotations

from pathlib import Path

# the special tokens the Qwen chat and vision prompts use (ids follow the 256 byte tokens and <|endoftext|>)
QWEN_SPECIALS = (
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen_tokenizer(model_max_length: int = 64):
    """A Qwen2Tokenizer over the 256 byte-level symbols (no merges), the Qwen specials and a ChatML template."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS)})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tiny_qwen_tokenizer(path: Path, model_max_length: int = 64) -> None:
    """Write tiny_qwen_tokenizer() into `path` (tokenizer.json, its config and the chat template)."""
    tiny_qwen_tokenizer(model_max_length).save_pretrained(path)
