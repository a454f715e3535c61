"""flexopt: Flexiffusion segment-wise search for faster diffusion sampling, as an Optuna study."""

from __future__ import annotations

__version__ = "0.1.0"

from flexopt.errors import FlexoptError
from flexopt.schedule import Schedule
from flexopt.space import Candidate, SearchSpace, Segment, StepType

__all__ = [
    "Candidate",
    "FlexoptError",
    "Schedule",
    "SearchSpace",
    "Segment",
    "StepType",
    "__version__",
]
