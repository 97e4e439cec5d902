"""CUDA memory check of bench.fullsize: Atelier's peak VRAM for one job, and whether the arbiter's unload returns it."""

from __future__ import annotations

import gc
from typing import Any

MIB = 1024 * 1024
RETURNED_SLACK = 64 * MIB  # allocator bookkeeping left after an unload that still counts as "returned"


def _settle() -> tuple[int, int]:
    """(allocated, free-on-device) after a collection and an empty cache."""
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info()
    return torch.cuda.memory_allocated(), free


async def vram_check(svc: Any, case: dict[str, Any]) -> dict[str, Any]:
    """Unload everything, then load + run one job, record the peak, unload and compare with the baseline."""
    import torch

    from bench.fullsize import atelier_call

    diffusion = [m["name"] for m in svc.arbiter.snapshot() if m["kind"] == "diffusion"]
    for name in diffusion:
        await svc.arbiter.unload(name)
    base_alloc, base_free = _settle()
    torch.cuda.reset_peak_memory_stats()
    await atelier_call(svc, case, 7)
    peak = torch.cuda.max_memory_allocated() - base_alloc
    loaded = [m for m in svc.arbiter.snapshot() if m["kind"] == "diffusion" and m["loaded"]]
    for m in loaded:
        await svc.arbiter.unload(m["name"])
    after_alloc, after_free = _settle()
    return {
        "peak_mib": round(peak / MIB),
        "arbiter_planned_mib": round(sum(m["planned_bytes"] for m in loaded) / MIB),
        "left_allocated_mib": round((after_alloc - base_alloc) / MIB, 1),
        "free_change_mib": round((after_free - base_free) / MIB, 1),
        "unload_returns_vram": after_alloc - base_alloc <= RETURNED_SLACK
        and base_free - after_free <= RETURNED_SLACK,
    }
