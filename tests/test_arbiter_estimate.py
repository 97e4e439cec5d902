"""The arbiter reads a loaded model's estimate once per load (real estimates read weight-file headers)."""

from __future__ import annotations

from engine.runtime.arbiter import MIB
from tests.test_arbiter import TinyModel, make


class CountingModel(TinyModel):
    """Counts estimate_bytes() calls (a real model reads weight-file headers for each)."""

    def __init__(self, name: str, est_mib: float):
        super().__init__(name, est_mib)
        self.estimates = 0

    def estimate_bytes(self) -> int:
        self.estimates += 1
        return super().estimate_bytes()


async def test_a_loaded_models_estimate_is_read_once_per_load() -> None:
    model = CountingModel("a", 4)
    arb = make(16, models=[model])
    async with arb.use("a"):
        pass
    model.estimates = 0
    for _ in range(5):  # admission and /queue snapshot on every submit
        assert {s["name"]: s for s in arb.snapshot()}["a"]["est_bytes"] == 4 * MIB
        assert arb.used_bytes >= 4 * MIB
    assert model.estimates == 1
    model.est = 6 * MIB  # e.g. new weights on disk: the next load reads the estimate again
    await arb.unload("a")
    assert arb.snapshot()[0]["est_bytes"] == 6 * MIB  # unloaded: read each time
    async with arb.use("a"):
        pass
    model.estimates = 0
    assert arb.snapshot()[0]["est_bytes"] == arb.snapshot()[0]["est_bytes"] == 6 * MIB
    assert model.estimates == 1
