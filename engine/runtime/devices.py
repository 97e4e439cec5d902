"""Devices and memory: "auto" resolution, the arbiter's byte budget, and measuring what a load added."""

from __future__ import annotations

import os

from engine.config import Gpu

MIB = 1024 * 1024


def resolve_device(device: str) -> str:
    """Turn "auto" into the best available device."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_budget(gpu: Gpu, device: str) -> int:
    """Bytes the arbiter may fill: cuda total minus reserve (or vram_budget_mb); else ram_budget_mb."""
    if device.startswith("cuda"):
        if gpu.vram_budget_mb is not None:
            return gpu.vram_budget_mb * MIB
        import torch

        _free, total = torch.cuda.mem_get_info(torch.device(device))
        return max(0, total - gpu.reserve_mb * MIB)
    return gpu.ram_budget_mb * MIB


class Probe:
    """Measures how many bytes a load added on the device."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")

    def sample(self) -> tuple[int, int]:
        if not self.cuda:
            return rss_bytes(), 0
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(self.device))
        return torch.cuda.memory_allocated(torch.device(self.device)), free

    def delta(self, before: tuple[int, int], after: tuple[int, int], estimate: int) -> int:
        """Allocated-bytes delta; on cuda, falls back to the free-memory delta for non-torch allocators."""
        grown = after[0] - before[0]
        if self.cuda and grown < estimate // 100:
            grown = max(grown, before[1] - after[1])  # e.g. llama.cpp allocates outside torch
        return max(0, grown)
