"""Prompt weighting: `(word:1.3)`, `(word)` (×1.1) and `[word]` (÷1.1) turned into embeddings through compel.

Only prompts that use the syntax take this path (plain prompts go to diffusers unchanged and still batch).
SD1.5 and SDXL are served; FLUX's T5 conditioning cannot be weighted this way, so it is refused up front.
Write `\\(` / `\\)` / `\\[` / `\\]` for literal brackets.
"""

from __future__ import annotations

import re
from typing import Any

WEIGHTED_FAMILIES = ("sd15", "sdxl")
UP, DOWN = 1.1, 1 / 1.1
_SYNTAX = re.compile(r"(?<!\\)[()\[\]]")
_WEIGHT = re.compile(r":\s*(-?\d+(?:\.\d+)?)\s*$")
MAX_WEIGHT = 3.0
Fragments = list[tuple[str, float]]


def has_weighting(text: str) -> bool:
    """True when `text` uses unescaped weighting brackets."""
    return bool(_SYNTAX.search(text or ""))


def check_weighting(prompt: str, negative: str, family: str) -> None:
    """Raise ValueError when weighting syntax is used for a family compel cannot serve."""
    if family not in WEIGHTED_FAMILIES and (has_weighting(prompt) or has_weighting(negative)):
        raise ValueError(
            f"prompt weighting ((word:1.3), [word]) works with sd15 and sdxl presets, not {family}; "
            "remove the brackets or escape them as \\( \\)"
        )
    for text in (prompt, negative):
        parse(text)  # unbalanced brackets or bad weights are reported before the job is queued


def parse(text: str) -> Fragments:
    """Split A1111-style text into (text, weight) fragments; ValueError on unbalanced brackets or bad weights."""
    frags: Fragments = []
    stack: list[tuple[str, float, int]] = []  # (closer, factor, first fragment index) per open bracket
    buf: list[str] = []
    i = 0

    def weight() -> float:
        w = 1.0
        for _, f, _ in stack:
            w *= f
        return w

    def flush() -> None:
        if buf:
            frags.append(("".join(buf), round(weight(), 4)))
            buf.clear()

    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "()[]":
            buf.append(text[i + 1])
            i += 2
            continue
        if c in "([":
            flush()
            stack.append((")" if c == "(" else "]", UP if c == "(" else DOWN, len(frags)))
        elif c in ")]":
            if not stack or stack[-1][0] != c:
                raise ValueError(f"unbalanced '{c}' in the prompt; escape a literal one as \\{c}")
            chunk = "".join(buf)
            m = _WEIGHT.search(chunk) if c == ")" else None
            if m:
                w = float(m.group(1))
                if not 0.0 <= w <= MAX_WEIGHT:
                    raise ValueError(f"prompt weight {w} is outside 0..{MAX_WEIGHT}")
                buf[:] = list(chunk[: m.start()])
                _, old, start = stack[-1]
                frags[start:] = [(t, round(x * w / old, 4)) for t, x in frags[start:]]
                stack[-1] = (")", w, start)
            flush()
            stack.pop()
        else:
            buf.append(c)
        i += 1
    if stack:
        raise ValueError(f"unclosed '{'(' if stack[-1][0] == ')' else '['}' in the prompt")
    flush()
    return [(t, w) for t, w in frags if t.strip()] or [("", 1.0)]


def plain(text: str) -> str:
    """The text without weighting syntax (for SDXL's pooled embedding)."""
    return " ".join(t.strip() for t, _ in parse(text) if t.strip())


def _compel_class() -> type:
    from compel import Compel
    from compel.prompt_parser import Conjunction, FlattenedPrompt

    class A1111Compel(Compel):
        """Compel reading A1111 syntax; the pooled embedding (SDXL) is taken from the plain text."""

        @classmethod
        def parse_prompt_string(cls, prompt_string: str) -> Any:
            return Conjunction([FlattenedPrompt(parse(prompt_string))])

        def build_conditioning_tensor(self, text: str, return_tokenization: bool = False) -> Any:
            conj = self.parse_prompt_string(text)
            cond, tokens, _ = self.build_conditioning_tensor_for_conjunction(conj, return_tokenization=True)
            if not self.requires_pooled:
                return (cond, tokens) if return_tokenization else cond
            pooled = self.conditioning_provider.get_pooled_embeddings([plain(text)], device=self.device)
            return (cond, tokens, pooled) if return_tokenization else (cond, pooled)

    return A1111Compel


def _compels(pipe: Any, family: str) -> list[Any]:
    from compel import DiffusersTextualInversionManager, ReturnedEmbeddingsType

    cls = _compel_class()
    ti = DiffusersTextualInversionManager(pipe)
    if family == "sd15":
        return [cls(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, textual_inversion_manager=ti,
                    truncate_long_prompts=False)]
    kind = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
    return [
        cls(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, textual_inversion_manager=ti,
            returned_embeddings_type=kind, truncate_long_prompts=False),
        cls(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2, textual_inversion_manager=ti,
            returned_embeddings_type=kind, truncate_long_prompts=False, requires_pooled=True),
    ]


def encode(pipe: Any, family: str, prompts: list[str], negatives: list[str]) -> dict[str, Any]:
    """Pipeline kwargs (prompt_embeds, negative_prompt_embeds, and SDXL's pooled ones) for weighted prompts."""
    import torch

    if family not in WEIGHTED_FAMILIES:
        from engine.runtime.diffusion.errors import InvalidRequest

        raise InvalidRequest(f"prompt weighting is not available for {family} presets")
    texts = list(prompts) + list(negatives)
    with torch.no_grad():
        if family == "sd15":
            (c,) = _compels(pipe, family)
            embeds = torch.cat(c.pad_conditioning_tensors_to_same_length([c(t) for t in texts]))
            n = len(prompts)
            return {"prompt_embeds": embeds[:n], "negative_prompt_embeds": embeds[n:]}
        c1, c2 = _compels(pipe, family)
        left = [c1(t) for t in texts]
        right, pooled = zip(*(c2(t) for t in texts), strict=True)
        length = max(x.shape[1] for x in (*left, *right))
        left = c1.pad_conditioning_tensors_to_same_length(_pad_to(c1, left, length))
        right = c2.pad_conditioning_tensors_to_same_length(_pad_to(c2, list(right), length))
        embeds = torch.cat([torch.cat(left), torch.cat(right)], dim=-1)
        pooled_all = torch.cat(list(pooled))
    n = len(prompts)
    neg, neg_pooled = embeds[n:], pooled_all[n:]
    if getattr(pipe.config, "force_zeros_for_empty_prompt", False) and not any(x.strip() for x in negatives):
        neg, neg_pooled = torch.zeros_like(neg), torch.zeros_like(neg_pooled)
    return {
        "prompt_embeds": embeds[:n],
        "pooled_prompt_embeds": pooled_all[:n],
        "negative_prompt_embeds": neg,
        "negative_pooled_prompt_embeds": neg_pooled,
    }


def _pad_to(c: Any, tensors: list[Any], length: int) -> list[Any]:
    """Pad each (1, L, D) tensor to `length` tokens with the empty-prompt conditioning (whole 77-token chunks)."""
    import torch

    out = []
    empty = None
    for t in tensors:
        while t.shape[1] < length:
            if empty is None:
                empty = c("")[:, :, :] if not c.requires_pooled else c("")[0]
            t = torch.cat([t, empty], dim=1)
        out.append(t)
    return out


def apply(pipe: Any, family: str, kwargs: dict[str, Any], prompts: list[str], negatives: list[str]) -> bool:
    """Replace prompt/negative_prompt in `kwargs` with compel embeddings when any text is weighted."""
    if not any(has_weighting(t) for t in (*prompts, *negatives)):
        return False
    kwargs.pop("prompt", None)
    kwargs.pop("negative_prompt", None)
    kwargs.update(encode(pipe, family, prompts, negatives))
    return True
