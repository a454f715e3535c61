"""The vocabulary of a schedule (SPEC §1): a step's type, a segment, a segment-wise candidate.

Values only: the spaces (`segment`, `timestep`) and the `Schedule` are built from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StepType(StrEnum):
    """What one base-grid slot does: the whole U-Net, its shallow branch, or nothing."""

    FULL = "F"
    PARTIAL = "P"
    NULL = "N"


@dataclass(frozen=True, order=True)
class Segment:
    """One segment: a full step, then `interval - 1` partial steps with `branch` (1-based)."""

    branch: int
    interval: int

    def step_types(self, segment_length: int) -> list[StepType]:
        """Step type of each of the segment's `segment_length` slots."""
        k = self.interval
        return (
            [StepType.FULL] + [StepType.PARTIAL] * (k - 1) + [StepType.NULL] * (segment_length - k)
        )


@dataclass(frozen=True)
class Candidate:
    """A segment-wise candidate: the ordered `(branch, interval)` of each segment."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        # Accept lists and (branch, interval) pairs so callers need not build tuples of Segments.
        segs = tuple(s if isinstance(s, Segment) else Segment(*s) for s in self.segments)
        object.__setattr__(self, "segments", segs)

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def nfe(self) -> int:
        """Number of U-Net calls (full + partial steps)."""
        return sum(s.interval for s in self.segments)

    def step_types(self, segment_length: int) -> list[StepType]:
        """Step type of every base-grid slot (`N · L` of them)."""
        return [t for s in self.segments for t in s.step_types(segment_length)]

    def slot_branches(self, segment_length: int) -> list[int | None]:
        """Branch of every base-grid slot: the segment's branch on partial slots, else None."""
        return [
            s.branch if t is StepType.PARTIAL else None
            for s in self.segments
            for t in s.step_types(segment_length)
        ]

    def step_string(self, segment_length: int) -> str:
        """Compact picture of the schedule, one letter per slot, `|` between segments."""
        return "|".join("".join(s.step_types(segment_length)) for s in self.segments)

    def __str__(self) -> str:
        return " ".join(f"{s.branch}/{s.interval}" for s in self.segments)
