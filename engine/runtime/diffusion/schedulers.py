"""Scheduler choice by name; LMS works without scipy (its coefficients are integrated exactly with numpy)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from engine.runtime.diffusion.errors import InvalidRequest


def lms_coefficient(sigmas: list[float], order: int, t: int, current_order: int) -> float:
    """Integrate the LMS Lagrange basis polynomial exactly between sigmas[t] and sigmas[t+1]."""
    poly = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k == current_order:
            continue
        denom = sigmas[t - current_order] - sigmas[t - k]
        poly = poly * np.polynomial.Polynomial([-sigmas[t - k] / denom, 1.0 / denom])
    anti = poly.integ()
    return float(anti(sigmas[t + 1]) - anti(sigmas[t]))


@functools.cache
def exact_lms_class() -> type:
    """LMSDiscreteScheduler with exact numpy coefficients (diffusers needs scipy for its own)."""
    from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler

    class ExactLMSScheduler(LMSDiscreteScheduler):
        def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
            return lms_coefficient([float(s) for s in self.sigmas], order, t, current_order)

    return ExactLMSScheduler


def _classes() -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "euler": ("EulerDiscreteScheduler", {}),
        "euler_a": ("EulerAncestralDiscreteScheduler", {}),
        "dpm++_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "dpm++_2m_karras": (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        ),
        "ddim": ("DDIMScheduler", {}),
        "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
        "lms": ("ExactLMSScheduler", {}),
        "heun": ("HeunDiscreteScheduler", {}),
        "unipc": ("UniPCMultistepScheduler", {}),
    }


SCHEDULERS: tuple[str, ...] = tuple(_classes())
FLOW_SCHEDULERS: tuple[str, ...] = ("euler", "default")


def check_scheduler(name: str, family: str) -> str:
    """Return the canonical scheduler name or raise InvalidRequest listing the valid ones."""
    key = name.strip().lower()
    allowed = FLOW_SCHEDULERS if family == "flux" else (*SCHEDULERS, "default")
    if key not in allowed:
        raise InvalidRequest(f"unknown scheduler '{name}' for {family}; choose one of: {', '.join(allowed)}")
    return key


def make_scheduler(name: str, base_config: Any, family: str) -> Any:
    """Build the named scheduler from the model's own scheduler config ("default" keeps the model's class)."""
    import diffusers

    key = check_scheduler(name, family)
    if family == "flux":
        cls = diffusers.FlowMatchEulerDiscreteScheduler
        return cls.from_config(base_config)
    if key == "default":
        cls_name = base_config.get("_class_name", "EulerDiscreteScheduler")
        cls = exact_lms_class() if cls_name == "LMSDiscreteScheduler" else getattr(diffusers, cls_name)
        return cls.from_config(base_config)
    cls_name, extra = _classes()[key]
    cls = exact_lms_class() if cls_name == "ExactLMSScheduler" else getattr(diffusers, cls_name)
    return cls.from_config(base_config, **extra)


def scheduler_for(current: Any, name: str, base_config: Any, family: str) -> Any:
    """The scheduler for a pipeline call: `current` when it already is the named one, else make_scheduler's."""
    key = (check_scheduler(name, family), family)  # reuse is safe: diffusers resets its state in set_timesteps
    if getattr(current, "_atelier_key", None) == key:
        return current
    made = make_scheduler(name, base_config, family)
    made._atelier_key = key
    return made
