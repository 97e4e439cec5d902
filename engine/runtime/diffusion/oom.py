"""Out-of-memory fallback: halve the batch (halves run in turn), then VAE tiling/slicing, then CPU offload."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

from engine.runtime.diffusion.errors import GenerationFailed

log = logging.getLogger("atelier.engine")
T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError and for RuntimeErrors whose message says "out of memory"."""
    import torch

    oom_types = tuple(
        t
        for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if t
    )
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_fallback(
    run: Callable[[list[int]], list[T]],
    seeds: list[int],
    *,
    vae_low_memory: Callable[[], None],
    cpu_offload: Callable[[], None],
    what: str,
    record: list[str] | None = None,
) -> list[T]:
    """Run `run(chunk_of_seeds)` over all seeds, degrading on OOM; every seed still yields its own result.

    Order: batch n -> ceil(n/2) -> ... -> 1, then `vae_low_memory()`, then `cpu_offload()`, then GenerationFailed.
    Each fallback is logged on "atelier.engine" and appended to `record` ("batch 4->2", "vae_tiling", "cpu_offload").
    """
    record = record if record is not None else []
    results: list[T] = []
    chunk, pos = len(seeds), 0
    stages = ["vae_tiling", "cpu_offload"]
    while pos < len(seeds):
        part = seeds[pos : pos + chunk]
        try:
            out = run(part)
        except Exception as e:
            if not is_oom(e):
                raise
            free_memory()
            if chunk > 1:
                new = (chunk + 1) // 2
                log.warning(
                    "out of memory generating %s at batch %d; retrying in batches of %d", what, chunk, new
                )
                record.append(f"batch {chunk}->{new}")
                chunk = new
            elif stages:
                stage = stages.pop(0)
                log.warning("out of memory generating %s at batch 1; enabling %s", what, stage)
                (vae_low_memory if stage == "vae_tiling" else cpu_offload)()
                record.append(stage)
            else:
                log.error("out of memory generating %s after every fallback (%s)", what, ", ".join(record))
                raise GenerationFailed(
                    f"out of memory generating {what}, even after {', '.join(record)}; "
                    "try a smaller size, a smaller batch or fewer LoRAs"
                ) from e
            continue
        results.extend(out)
        pos += len(part)
    return results
