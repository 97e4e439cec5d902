"""Textual-inversion embeddings and an alternative VAE on a loaded pipeline, applied per request like LoRAs.

A request names embeddings as (file, token) pairs and optionally a VAE (a diffusers AutoencoderKL folder, a
pipeline folder with a `vae/` subfolder, or a single .safetensors file). Only changes reload anything; an empty
set restores the pipeline's own tokenizer/encoders and VAE exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.resolve import resolve_model

log = logging.getLogger("atelier.engine")
EMBEDDING_PATTERNS = ["*.safetensors", "*.bin", "*.pt"]
VAE_PATTERNS = ["*.json", "*.safetensors", "vae/*.json", "vae/*.safetensors"]


def _embedding_file(path: Path, ref: str) -> Path:
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.pt"))
        if not files:
            raise InvalidRequest(f"embedding '{ref}': no .safetensors/.bin/.pt file in {path}")
        return files[0]
    return path


def _read_embedding(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


class AddonManager:
    """Tracks the embeddings and VAE in one pipeline; reloads only when the requested set changes."""

    def __init__(self, who: str, family: str, models_dir: Path | None = None) -> None:
        self.who = who
        self.family = family
        self.models_dir = models_dir
        self.embeddings: tuple[tuple[str, str], ...] = ()  # (resolved file, token)
        self.vae: str | None = None  # resolved VAE path, None = the pipeline's own
        self._base_vae: Any = None

    def apply(self, pipe: Any, embeddings: list[tuple[str, str]], vae: str | None) -> bool:
        """Make exactly these embeddings and this VAE active; True when the VAE object changed."""
        if self.family == "flux" and (embeddings or vae):
            raise InvalidRequest(f"{self.who}: embeddings and VAE choice work with sd15 and sdxl, not flux")
        wanted = tuple((str(self._resolve_embedding(ref)), token) for ref, token in embeddings)
        tokens = [t for _, t in wanted]
        if len(set(tokens)) != len(tokens):
            raise InvalidRequest("the same embedding token is listed more than once")
        if wanted != self.embeddings:
            self.clear_embeddings(pipe)
            for (path, token), (ref, _) in zip(wanted, embeddings, strict=True):
                self._load_embedding(pipe, Path(path), token, ref)
            self.embeddings = wanted
        return self._apply_vae(pipe, vae)

    def _resolve_embedding(self, ref: str) -> Path:
        path = resolve_model(ref, f"{self.who} embedding '{ref}'", self.models_dir, patterns=EMBEDDING_PATTERNS)
        return _embedding_file(path, ref)

    def _load_embedding(self, pipe: Any, path: Path, token: str, ref: str) -> None:
        try:
            if self.family == "sdxl":
                state = _read_embedding(path)
                if "clip_l" not in state or "clip_g" not in state:
                    raise InvalidRequest(f"embedding '{ref}' is not an SDXL embedding (needs clip_l and clip_g)")
                pipe.load_textual_inversion(state["clip_l"], token=token, tokenizer=pipe.tokenizer,
                                            text_encoder=pipe.text_encoder)
                pipe.load_textual_inversion(state["clip_g"], token=token, tokenizer=pipe.tokenizer_2,
                                            text_encoder=pipe.text_encoder_2)
            else:
                pipe.load_textual_inversion(str(path), token=token)
        except InvalidRequest:
            self.clear_embeddings(pipe)
            raise
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            self.clear_embeddings(pipe)
            raise InvalidRequest(f"embedding '{ref}' cannot be loaded into {self.who}: {e}") from e
        self.embeddings = (*self.embeddings, (str(path), token))
        log.info("loaded embedding %s as %s on %s", path, token, self.who)

    def _apply_vae(self, pipe: Any, ref: str | None) -> bool:
        path = None if not ref else str(resolve_model(ref, f"{self.who} VAE '{ref}'", self.models_dir,
                                                      patterns=VAE_PATTERNS))
        if path == self.vae:
            return False
        if self._base_vae is None:
            self._base_vae = pipe.vae
        if path is None:
            pipe.vae = self._base_vae
        else:
            pipe.vae = self._load_vae(Path(path), ref or "")
        self.vae = path
        log.info("%s uses VAE %s", self.who, path or "of the pipeline")
        return True

    def _load_vae(self, path: Path, ref: str) -> Any:
        from diffusers import AutoencoderKL

        base = self._base_vae
        kw = {"torch_dtype": base.dtype}
        try:
            if path.is_file():
                vae = AutoencoderKL.from_single_file(str(path), **kw)
            elif (path / "vae" / "config.json").is_file():
                vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", **kw)
            else:
                vae = AutoencoderKL.from_pretrained(str(path), **kw)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InvalidRequest(f"VAE '{ref}' cannot be loaded for {self.who}: {e}") from e
        if vae.config.latent_channels != base.config.latent_channels:
            raise InvalidRequest(
                f"VAE '{ref}' has {vae.config.latent_channels} latent channels; {self.who} needs "
                f"{base.config.latent_channels}"
            )
        return vae.to(base.device)

    def clear_embeddings(self, pipe: Any) -> None:
        """Remove every loaded embedding token from the tokenizer(s) and text encoder(s)."""
        if self.embeddings and pipe is not None:
            tokens = [t for _, t in self.embeddings]
            pipe.unload_textual_inversion(tokens)
            if self.family == "sdxl":
                pipe.unload_textual_inversion(tokens, tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2)
            log.info("unloaded embeddings %s from %s", ", ".join(tokens), self.who)
        self.embeddings = ()

    def clear(self, pipe: Any) -> bool:
        """Back to the base pipeline (no embeddings, its own VAE); True when the VAE object changed."""
        self.clear_embeddings(pipe)
        return self._apply_vae(pipe, None) if pipe is not None else False

    def forget(self) -> None:
        """Drop the state without touching a pipeline (the pipeline itself was unloaded)."""
        self.embeddings, self.vae, self._base_vae = (), None, None
