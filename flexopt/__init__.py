"""flexopt: Flexiffusion segment-wise search for faster diffusion sampling, as an Optuna study."""

from __future__ import annotations

from flexopt._lazy import lazy_attributes
from flexopt._version import __version__
from flexopt.errors import FlexoptError
from flexopt.space.schedule import PlacedStep, Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment, StepType
from flexopt.space.timestep import Placement, TimestepSpace

# Lazy: these need torch, diffusers or the whole of Optuna, which `import flexopt` does not load.
_LAZY = {
    "apply_schedule": "flexopt.run.pipeline",
    "scheduled": "flexopt.run.hooks",
    "enable": "flexopt.run.hooks",
    "disable": "flexopt.run.hooks",
    "FlexScheduler": "flexopt.run.scheduler",
    "FlexEvolutionSampler": "flexopt.search.sampler",
    "Objective": "flexopt.search.objective",
    "SearchJob": "flexopt.search.job",
    "optimize": "flexopt.search.loop",
    "run_search": "flexopt.search.job",
}


__getattr__ = lazy_attributes("flexopt", _LAZY)


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
