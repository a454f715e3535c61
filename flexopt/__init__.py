"""flexopt: Flexiffusion segment-wise search for faster diffusion sampling, as an Optuna study."""

from __future__ import annotations

__version__ = "0.1.0"

from flexopt.errors import FlexoptError
from flexopt.schedule import PlacedStep, Schedule
from flexopt.space import Candidate, SearchSpace, Segment, StepType
from flexopt.timestep_space import Placement, TimestepSpace

# Lazy: these need torch, diffusers or Optuna, which `flexopt --help` should not load.
_LAZY = {
    "apply_schedule": "flexopt.pipeline",
    "scheduled": "flexopt.hooks",
    "enable": "flexopt.hooks",
    "disable": "flexopt.hooks",
    "FlexScheduler": "flexopt.scheduler",
    "FlexEvolutionSampler": "flexopt.sampler",
    "Objective": "flexopt.objective",
    "SearchJob": "flexopt.search",
    "optimize": "flexopt.search",
    "run_search": "flexopt.search",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flexopt' has no attribute {name!r}")


__all__ = [
    "Candidate",
    "FlexEvolutionSampler",
    "FlexScheduler",
    "FlexoptError",
    "Objective",
    "PlacedStep",
    "Placement",
    "Schedule",
    "SearchJob",
    "SearchSpace",
    "Segment",
    "StepType",
    "TimestepSpace",
    "__version__",
    "apply_schedule",
    "disable",
    "enable",
    "optimize",
    "run_search",
    "scheduled",
]
