"""Schedule files (`flexopt.schedule/1`, SPEC §4): what `export` writes and `generate` reads.

A schedule is a candidate plus what is needed to run it exactly: the sampler, the teacher's step
count `t_ref` (avg MACs are divided by it) and the segment length `L`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexopt.errors import FlexoptError
from flexopt.space import Candidate, SearchSpace, Segment, StepType

FORMAT = "flexopt.schedule/1"
SAMPLERS = ("ddim", "plms", "dpm-solver")
_KEYS = {"format", "sampler", "t_ref", "segment_length", "segments", "meta"}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: an integer >= 1")
    return value


def check_sampler(sampler: Any) -> str:
    """Return `sampler` if it is a supported sampler name, else raise naming the allowed ones."""
    if sampler not in SAMPLERS:
        raise FlexoptError(f"sampler {sampler!r} is not supported; allowed: {', '.join(SAMPLERS)}")
    return sampler


@dataclass(frozen=True)
class Schedule:
    """A runnable segment-wise schedule. Build with `full`, `uniform`, `from_candidate`, `load`."""

    sampler: str
    t_ref: int
    segment_length: int
    segments: tuple[Segment, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_sampler(self.sampler)
        _positive_int("t_ref", self.t_ref)
        L = _positive_int("segment_length", self.segment_length)
        segs = Candidate(tuple(self.segments)).segments
        if not segs:
            raise FlexoptError("schedule has no segments; allowed: at least one segment")
        for i, s in enumerate(segs):
            _positive_int(f"segment {i} branch", s.branch)
            _positive_int(f"segment {i} interval", s.interval)
            if s.interval > L:
                raise FlexoptError(
                    f"segment {i} interval {s.interval} exceeds the segment length {L}; "
                    f"allowed: 1..{L}"
                )
        object.__setattr__(self, "segments", segs)

    # ----------------------------------------------------------------------- constructors
    @classmethod
    def full(cls, t_ref: int, sampler: str = "ddim") -> Schedule:
        """The plain teacher: `t_ref` full steps (N = t_ref, L = 1)."""
        _positive_int("t_ref", t_ref)
        return cls(sampler, t_ref, 1, (Segment(1, 1),) * t_ref)

    @classmethod
    def uniform(cls, t_ref: int, interval: int, branch: int, sampler: str = "ddim") -> Schedule:
        """DeepCache uniform: a full step every `interval` steps, partial steps with `branch`."""
        _positive_int("t_ref", t_ref)
        _positive_int("interval", interval)
        _positive_int("branch", branch)
        if t_ref % interval:
            divisors = [d for d in range(1, t_ref + 1) if t_ref % d == 0]
            raise FlexoptError(
                f"interval {interval} does not divide t_ref {t_ref}; "
                f"allowed: {','.join(map(str, divisors))}"
            )
        return cls(sampler, t_ref, interval, (Segment(branch, interval),) * (t_ref // interval))

    @classmethod
    def from_candidate(
        cls, candidate: Candidate, space: SearchSpace, sampler: str = "ddim", **meta: Any
    ) -> Schedule:
        """The schedule of a search candidate (its space gives `t_ref` and `L`)."""
        space.check(candidate)
        return cls(sampler, space.t_ref, space.segment_length, candidate.segments, dict(meta))

    # ------------------------------------------------------------------------ properties
    @property
    def candidate(self) -> Candidate:
        return Candidate(self.segments)

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def grid_length(self) -> int:
        """`N · L`: the base grid has that many timesteps, spaced as the sampler spaces them."""
        return self.n_segments * self.segment_length

    @property
    def nfe(self) -> int:
        """Number of U-Net calls."""
        return self.candidate.nfe

    def step_types(self) -> list[StepType]:
        """Step type of each base-grid slot."""
        return self.candidate.step_types(self.segment_length)

    def slot_branches(self) -> list[int | None]:
        """Branch of each base-grid slot (None except on partial slots)."""
        return self.candidate.slot_branches(self.segment_length)

    def step_string(self) -> str:
        return self.candidate.step_string(self.segment_length)

    # ------------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "sampler": self.sampler,
            "t_ref": self.t_ref,
            "segment_length": self.segment_length,
            "segments": [{"branch": s.branch, "interval": s.interval} for s in self.segments],
        }
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "schedule") -> Schedule:
        """Validate and build from parsed JSON; errors name `source` and the bad field."""
        if not isinstance(data, dict):
            raise FlexoptError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise FlexoptError(
                f"{source}: format {data.get('format')!r} is not supported; allowed: {FORMAT!r}"
            )
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise FlexoptError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(_KEYS))}"
            )
        for key in ("sampler", "t_ref", "segment_length", "segments"):
            if key not in data:
                raise FlexoptError(f"{source}: missing key {key!r}")
        raw = data["segments"]
        if not isinstance(raw, list):
            raise FlexoptError(
                f"{source}: 'segments' must be a list of {{branch, interval}} objects"
            )
        segs = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict) or set(s) != {"branch", "interval"}:
                raise FlexoptError(
                    f"{source}: segment {i} {s!r} is invalid; allowed: "
                    '{"branch": int >= 1, "interval": int >= 1}'
                )
            segs.append(Segment(s["branch"], s["interval"]))
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise FlexoptError(f"{source}: 'meta' must be an object")
        try:
            return cls(data["sampler"], data["t_ref"], data["segment_length"], tuple(segs), meta)
        except FlexoptError as err:
            raise FlexoptError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schedule:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FlexoptError(f"schedule file {str(p)!r} does not exist") from None
        except OSError as err:
            raise FlexoptError(f"schedule file {str(p)!r} cannot be read: {err.strerror}") from None
        except UnicodeDecodeError:
            raise FlexoptError(f"schedule file {str(p)!r} is not a text file; allowed: a "
                               "flexopt.schedule/1 JSON file (see `flexopt export`)") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise FlexoptError(
                f"schedule file {str(p)!r} is not valid JSON: {err.msg} "
                f"(line {err.lineno}, column {err.colno})"
            ) from None
        return cls.from_dict(data, source=f"schedule file {str(p)!r}")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves half a schedule."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    def __str__(self) -> str:
        return (
            f"{self.sampler} t_ref={self.t_ref} L={self.segment_length} "
            f"N={self.n_segments} NFE={self.nfe}: {self.step_string()}"
        )
