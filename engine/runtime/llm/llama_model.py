"""LlamaModel: a llama-cpp-python model the arbiter manages, behind the narrow ChatModel interface."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Unpack

from engine.config import Images, Settings
from engine.images import image_limits
from engine.runtime.llm.abortable import collect
from engine.runtime.llm.gguf import GGML_KV_TYPES, estimate_llm_bytes, offload_share, safe_metadata
from engine.runtime.llm.grammar import grammar_for
from engine.runtime.llm.messages import check_messages, prepare_images, require_vision
from engine.runtime.llm.prefix import PrefixStates, prefix_llama_class, save_state
from engine.runtime.llm.presets import LlmPreset, make_vision_handler, parse_preset, resolve_file
from engine.runtime.llm.types import (
    BadAction,
    ChatOptions,
    GenerationAborted,
    LlmError,
    Message,
    ModelNotLoaded,
    Reply,
    Timings,
    parse_json,
)


class LlamaModel:
    """One LLM preset on llama.cpp. load/unload are for the arbiter; chat/achat are serialized by a lock."""

    kind = "llm"

    def __init__(
        self,
        preset: dict | LlmPreset,
        *,
        images: Images | None = None,
        models_dir: str | Path | None = None,
        max_tokens: int = 384,
        temperature: float = 0.2,
        prefix_reuse: bool = True,
        prefix_cache_mb: int = 256,
        verbose: bool = False,
        device: str | None = None,
    ) -> None:
        self.preset = parse_preset(preset)
        self.target_device = device  # the arbiter's device: what estimate_bytes() sizes for
        self.name = self.preset.name
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.image_limits = image_limits(images or Images())
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.prefix_reuse = prefix_reuse
        self.prefix_states = PrefixStates(prefix_cache_mb << 20) if prefix_cache_mb > 0 else None
        self.verbose = verbose
        self._lock = threading.RLock()
        self._llama: Any = None
        self._handler: Any = None
        self._device: str | None = None
        self._options: dict[str, MappingProxyType] = {}
        self._paths: tuple[Path, Path | None] | None = None
        self._vocab: Any = None
        self._vocab_lock = threading.Lock()

    @classmethod
    def from_settings(cls, preset: dict | LlmPreset, settings: Settings, **kw: Any) -> LlamaModel:
        """Build with limits and defaults taken from the settings (images, llm, paths.models)."""
        kw.setdefault("images", settings.images)
        kw.setdefault("models_dir", settings.path("models"))
        kw.setdefault("max_tokens", settings.llm.max_tokens)
        kw.setdefault("temperature", settings.llm.temperature)
        kw.setdefault("prefix_cache_mb", settings.llm.prefix_cache_mb)
        return cls(preset, **kw)

    # ---- Managed -------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True between a successful load() and the next unload()."""
        return self._llama is not None

    @property
    def device(self) -> str | None:
        """The device it is loaded on, or None."""
        return self._device

    @property
    def handler(self) -> Any:
        """The vision chat handler of the current load (None when text-only or unloaded)."""
        return self._handler

    def _resolve(self, download: bool) -> tuple[Path | int, Path | int | None]:
        p = self.preset
        gguf = resolve_file(p, p.model, self.models_dir, download=download, what="model")
        mmproj = (
            resolve_file(p, p.mmproj, self.models_dir, download=download, what="mmproj") if p.mmproj else None
        )
        return gguf, mmproj

    def estimate_bytes(self) -> int:
        """Bytes on the target device, from the file sizes and headers: on cuda only the offloaded share
        (n_gpu_layers; 0 without llama.cpp GPU offload) of the weights and KV cache (kv_cache_type)."""
        gguf, mmproj = self._resolve(download=False)
        weights, extra = (_size(x) for x in (gguf, mmproj))
        meta = safe_metadata(gguf) if isinstance(gguf, Path) else {}
        p, cuda = self.preset, (self._device or self.target_device) == "cuda"
        share = offload_share(meta, p.n_gpu_layers, gpu_offload_supported()) if cuda else 1.0
        extra = extra if share > 0 else 0  # the vision projector goes where the model goes
        return extra + estimate_llm_bytes(
            weights, meta, p.n_ctx, p.n_batch, kv_type=p.kv_cache_type, share=share, host_logits=not cuda
        )

    def load_options(self, device: str) -> MappingProxyType:
        """The exact Llama(...) keyword options for `device`; the same frozen mapping on every load."""
        if device not in self._options:
            if self._paths is None:
                raise ModelNotLoaded(f"LLM preset {self.name!r}: files not resolved yet; call load()")
            p = self.preset
            self._options[device] = MappingProxyType(
                {
                    "model_path": str(self._paths[0]),
                    "n_gpu_layers": p.n_gpu_layers if device == "cuda" else 0,
                    "n_ctx": p.n_ctx,
                    "n_batch": p.n_batch,
                    "n_threads": p.n_threads,
                    "n_threads_batch": p.n_threads,
                    "seed": p.seed,
                    "flash_attn": p.flash_attn,
                    "type_k": GGML_KV_TYPES[p.kv_cache_type],
                    "type_v": GGML_KV_TYPES[p.kv_cache_type],
                    "use_mmap": True,
                    "chat_format": None if p.vision else p.chat_format,
                    "verbose": self.verbose,
                }
            )
        return self._options[device]

    def load(self, device: str) -> None:
        """Create the Llama (and a fresh vision handler); idempotent for the same device."""
        with self._lock:
            if self._llama is not None and self._device == device:
                return
            self.unload()
            gguf, mmproj = self._resolve(download=True)  # ModelNotAvailable if a file vanished
            assert isinstance(gguf, Path) and (mmproj is None or isinstance(mmproj, Path))
            if self._paths != (gguf, mmproj):
                self._paths = (gguf, mmproj)
                self._options.clear()
            options = self.load_options(device)
            self._check_chat_format()
            mmproj = self._paths[1]
            handler = make_vision_handler(self.preset.handler_name, mmproj, self.verbose) if mmproj else None
            try:
                self._llama = prefix_llama_class()(**options, chat_handler=handler)
            except (ValueError, RuntimeError, OSError) as e:
                raise LlmError(
                    f"LLM preset {self.name!r}: llama.cpp could not load {self._paths[0]}: {e}"
                ) from e
            self._handler, self._device = handler, device

    def _check_chat_format(self) -> None:
        name = self.preset.chat_format
        if name is None or self.preset.vision:
            return
        from llama_cpp import llama_chat_format

        try:
            llama_chat_format.get_chat_completion_handler(name)
        except Exception:
            raise LlmError(f"LLM preset {self.name!r}: unknown chat_format {name!r}") from None

    def unload(self) -> None:
        """Llama.close() (frees the model, context and the handler's mtmd context) and drop references."""
        with self._lock:
            llama, self._llama, self._handler, self._device = self._llama, None, None, None
            if self.prefix_states is not None:
                self.prefix_states.clear()  # the states belong to the closed context
            if llama is not None:
                llama.close()

    def close(self) -> None:
        """Unload and forget resolved paths and options."""
        with self._lock:
            self.unload()
            self._paths = None
            self._options.clear()
        with self._vocab_lock:
            vocab, self._vocab = self._vocab, None
            if vocab is not None:
                vocab.close()

    # ---- tokens --------------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """The context window every load uses (prompt + answer must fit)."""
        return self.preset.n_ctx

    def count_tokens(self, messages: list[Message]) -> int:
        """Tokens the chat prompt takes, counted with the model's own tokenizer (a vocab-only load; no arbiter)."""
        vocab = self._vocabulary()
        total = 3  # the assistant turn's opening tokens
        for m in messages:
            content = m.get("content")
            text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")
            total += len(vocab.tokenize(f"{m.get('role', '')}\n{text}".encode(), add_bos=False, special=False)) + 4
        return total

    def _vocabulary(self) -> Any:
        with self._vocab_lock:
            if self._vocab is None:
                gguf, _ = self._resolve(download=False)
                if not isinstance(gguf, Path):
                    raise ModelNotLoaded(f"LLM preset {self.name!r}: the model file is not downloaded yet")
                from llama_cpp import Llama

                self._vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
            return self._vocab

    # ---- chat ----------------------------------------------------------------------------------------

    def chat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """Blocking chat completion; with a schema the output is grammar-constrained and parsed. With `abort`
        it streams and raises GenerationAborted at the first token where abort() is true (abortable.py)."""
        n_images = check_messages(messages)
        require_vision(n_images, self.preset.vision, self.name)
        prepared = prepare_images(messages, limits=self.image_limits, max_side=self.preset.image_max_side)
        grammar = grammar_for(schema) if schema is not None else None
        abort, max_tokens, temperature = options.get("abort"), options.get("max_tokens"), options.get("temperature")
        with self._lock:
            llama = self._llama
            if llama is None:
                raise ModelNotLoaded(f"LLM preset {self.name!r} is not loaded")
            if not self.prefix_reuse:
                llama.reset()
                llama._ctx.kv_cache_clear()
            states = self.prefix_states if self.prefix_reuse and n_images == 0 else None
            llama.prefix_states = states  # restored before evaluation when a saved prefix beats the live one
            if abort is not None and abort():
                raise GenerationAborted(f"LLM preset {self.name!r}: stopped before the prompt was evaluated")
            _perf_reset(llama)
            t0 = time.perf_counter()
            out = llama.create_chat_completion(
                messages=prepared,
                grammar=grammar,
                max_tokens=max_tokens or self.max_tokens,
                temperature=self.temperature if temperature is None else temperature,
                stream=abort is not None,
            )
            if abort is not None:
                out = collect(out, abort, self.name)
            total_ms = (time.perf_counter() - t0) * 1000
            perf = _perf(llama)
            if states is not None:
                states.put(save_state(llama))
        if abort is not None:  # a stream reports no usage: the evaluated prompt tokens stand for the prompt
            out["usage"]["prompt_tokens"] = perf["n_p_eval"]
        return _reply(out, schema is not None, perf, total_ms)

    async def achat(self, messages: list[Message], schema: dict | None = None, **options: Unpack[ChatOptions]) -> Reply:
        """chat() in a worker thread, so the event loop never blocks."""
        return await asyncio.to_thread(functools.partial(self.chat, messages, schema, **options))


def _size(file: Path | int | None) -> int:
    """A resolved file's size (a hub file not downloaded yet is already its size; no file is 0)."""
    return 0 if file is None else file if isinstance(file, int) else file.stat().st_size


@functools.cache
def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (a CPU-only build puts nothing in VRAM)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def _perf_reset(llama: Any) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(llama._ctx.ctx)


def _perf(llama: Any) -> dict:
    """llama.cpp's own counters since the reset: batch (prompt) tokens evaluated and times."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(llama._ctx.ctx)
    return {
        "n_p_eval": int(data.n_p_eval),
        "t_p_eval_ms": float(data.t_p_eval_ms),
        "t_eval_ms": float(data.t_eval_ms),
    }


def _structured(text: str, finish_reason: str | None) -> Any:
    """Parse grammar-constrained output; a cut-off output gets its own message."""
    try:
        return parse_json(text)
    except BadAction:
        if finish_reason == "length":
            raise BadAction(f"the model's JSON was cut off at max_tokens: {text[-80:]!r}", text) from None
        raise


def _reply(out: dict, structured: bool, perf: dict, total_ms: float) -> Reply:
    choice = out["choices"][0]
    text = choice["message"].get("content") or ""
    usage = out.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    return Reply(
        text=text,
        data=_structured(text, choice.get("finish_reason")) if structured else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=int(usage.get("completion_tokens", 0)),
        # llama.cpp reports max(1, n); a fully cached prompt may re-evaluate one token as a single decode.
        prompt_eval_tokens=min(perf["n_p_eval"], prompt_tokens),
        finish_reason=choice.get("finish_reason") or "stop",
        timings=Timings(prompt_ms=perf["t_p_eval_ms"], generate_ms=perf["t_eval_ms"], total_ms=total_ms),
    )
