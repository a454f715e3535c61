"""What a candidate is: the segment space (Flexiffusion), the timestep and hybrid spaces
(AutoDiffusion), their candidates and mutations, and the `Schedule` value with its files.

The first stage: it imports nothing from the rest of flexopt but `flexopt.errors`.
"""

from flexopt.space.schedule import PlacedStep, Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment, StepType
from flexopt.space.timestep import Placement, TimestepSpace

__all__ = ["Candidate", "PlacedStep", "Placement", "Schedule", "SearchSpace", "Segment", "StepType",
           "TimestepSpace"]
