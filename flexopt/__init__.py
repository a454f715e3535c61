"""flexopt: Flexiffusion segment-wise search for faster diffusion sampling, as an Optuna study."""

from __future__ import annotations

__version__ = "0.1.0"

from flexopt.errors import FlexoptError
from flexopt.schedule import Schedule
from flexopt.space import Candidate, SearchSpace, Segment, StepType


def __getattr__(name: str):
    # Lazy: `apply_schedule` needs torch and diffusers, which `flexopt --help` should not load.
    if name == "apply_schedule":
        from flexopt.pipeline import apply_schedule

        return apply_schedule
    raise AttributeError(f"module 'flexopt' has no attribute {name!r}")


__all__ = [
    "Candidate",
    "FlexoptError",
    "Schedule",
    "SearchSpace",
    "Segment",
    "StepType",
    "__version__",
    "apply_schedule",
]
