"""A pipeline keeps its scheduler between calls while the name stays the same (diffusers resets its state)."""

from __future__ import annotations

import diffusers
import torch

from engine.runtime.diffusion.schedulers import scheduler_for


def test_the_same_name_reuses_the_scheduler_and_another_name_builds_one() -> None:
    base = diffusers.EulerDiscreteScheduler().config
    first = scheduler_for(None, "euler", base, "sd15")
    assert isinstance(first, diffusers.EulerDiscreteScheduler)
    assert scheduler_for(first, "Euler", base, "sd15") is first
    other = scheduler_for(first, "dpm++_2m", base, "sd15")
    assert isinstance(other, diffusers.DPMSolverMultistepScheduler)
    assert scheduler_for(other, "euler", base, "sd15") is not first  # back again: a fresh one
    assert scheduler_for(diffusers.EulerDiscreteScheduler.from_config(base), "euler", base, "sd15") is not first


def test_a_reused_scheduler_steps_exactly_like_a_fresh_one() -> None:
    base = diffusers.DPMSolverMultistepScheduler().config
    used = scheduler_for(None, "dpm++_2m", base, "sd15")

    def run(sched: diffusers.DPMSolverMultistepScheduler, steps: int) -> torch.Tensor:
        sched.set_timesteps(steps)
        sample = torch.ones(1, 4, 8, 8)
        for t in sched.timesteps:
            sample = sched.step(sample * 0.1 + t / 1000, t, sample).prev_sample
        return sample

    run(used, 3)  # leaves multistep history behind
    again = run(scheduler_for(used, "dpm++_2m", base, "sd15"), 5)
    fresh = run(scheduler_for(None, "dpm++_2m", base, "sd15"), 5)
    assert torch.equal(again, fresh)
