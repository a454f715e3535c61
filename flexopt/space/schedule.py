"""Schedule files (SPEC §6): what `export` writes and `generate` / `apply` read.

A schedule is a candidate plus what is needed to run it exactly: the sampler and the teacher's
step count `t_ref` (avg MACs are divided by it). Two forms:

- `flexopt.schedule/1`, segment-wise (Flexiffusion): the segment length `L` and each segment's
  `(branch, interval)` on the sampler's uniform grid of `N·L` steps;
- `flexopt.schedule/2`, placed steps (AutoDiffusion's timestep space and the hybrid): the model
  timestep of every U-Net call, strictly decreasing, and its step type (full, or partial with a
  branch). Full steps go wherever the timesteps say, not only on a uniform grid.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexopt.errors import FlexoptError
from flexopt.space.steps import Candidate, Segment, StepType

FORMAT = "flexopt.schedule/1"
FORMAT_V2 = "flexopt.schedule/2"
FORMATS = (FORMAT, FORMAT_V2)
SAMPLERS = ("ddim", "plms", "dpm-solver")
_KEYS = {"format", "sampler", "t_ref", "segment_length", "segments", "meta"}
_KEYS_V2 = {"format", "sampler", "t_ref", "timesteps", "step_types", "meta"}
# DPM-Solver++ order of a placed step (a v1 segment's order is its interval, SPEC §1).
PLACED_ORDER = 2


SPACINGS = ("uniform", "quadratic")


def spaced_timesteps(k: int, train_timesteps: int, spacing: str = "uniform",
                     offset: int = 0) -> tuple[int, ...]:
    """`k` model timesteps, descending. "uniform": diffusers' "leading" spacing (DDPM / DDIM /
    PNDM's default), the grid of the plain k-step teacher; "quadratic": the DDIM paper's CIFAR-10
    spacing, `int((i · sqrt(0.8 T) / (k-1))²)`, dense near the data (made strictly increasing
    where rounding would repeat a timestep)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= train_timesteps:
        raise FlexoptError(f"step count {k!r} is invalid; allowed: 1..{train_timesteps}")
    if spacing == "uniform":
        ts = [i * (train_timesteps // k) for i in range(k)]
    elif spacing == "quadratic":
        top = (0.8 * train_timesteps) ** 0.5
        ts = [int((i * top / (k - 1)) ** 2) if k > 1 else 0 for i in range(k)]
        for i in range(1, k):
            ts[i] = max(ts[i], ts[i - 1] + 1)
    else:
        raise FlexoptError(f"spacing {spacing!r} is not supported; allowed: {', '.join(SPACINGS)}")
    ts = [t + offset for t in ts]
    if ts[-1] >= train_timesteps:
        raise FlexoptError(f"{k} {spacing} steps with offset {offset} pass the model's "
                           f"{train_timesteps} training timesteps")
    return tuple(reversed(ts))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: an integer >= 1")
    return value


def _check_keys(data: dict[str, Any], source: str, allowed: set[str],
                required: tuple[str, ...]) -> None:
    """A schedule file's keys: none unknown (a typo is an error), none required missing."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise FlexoptError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in data:
            raise FlexoptError(f"{source}: missing key {key!r}")


def check_sampler(sampler: Any) -> str:
    """Return `sampler` if it is a supported sampler name, else raise naming the allowed ones."""
    if sampler not in SAMPLERS:
        raise FlexoptError(f"sampler {sampler!r} is not supported; allowed: {', '.join(SAMPLERS)}")
    return sampler


@dataclass(frozen=True, order=True)
class PlacedStep:
    """One U-Net call of a placed-step schedule: its model timestep and its step type."""

    timestep: int
    branch: int = 0  # 0: a full step; b >= 1: a partial step with branch b

    @property
    def kind(self) -> StepType:
        return StepType.FULL if self.branch == 0 else StepType.PARTIAL

    def label(self) -> str:
        """`F` or `P<b>`, as in a schedule file's `step_types`."""
        return "F" if self.branch == 0 else f"P{self.branch}"

    def __str__(self) -> str:
        return f"{self.timestep}{self.label()}"


def parse_step_type(value: Any, where: str) -> int:
    """The branch of a step-type label: `F` -> 0, `P<b>` -> b; raise naming the allowed ones."""
    if isinstance(value, str):
        v = value.strip().upper()
        if v == "F":
            return 0
        if v.startswith("P") and v[1:].isdigit() and int(v[1:]) >= 1:
            return int(v[1:])
    raise FlexoptError(f"{where} step type {value!r} is invalid; allowed: \"F\" (full) or "
                       "\"P<b>\" (partial with branch b >= 1, e.g. \"P2\")")


def _check_placed(steps: Any) -> tuple[PlacedStep, ...]:
    out = tuple(s if isinstance(s, PlacedStep) else PlacedStep(*s) for s in steps)
    if not out:
        raise FlexoptError("schedule has no steps; allowed: at least one step")
    for i, s in enumerate(out):
        t, b = s.timestep, s.branch
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise FlexoptError(f"step {i} timestep {t!r} is invalid; allowed: an integer >= 0")
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise FlexoptError(f"step {i} branch {b!r} is invalid; allowed: 0 (full) or >= 1")
        if i and t >= out[i - 1].timestep:
            raise FlexoptError(
                f"step {i} timestep {t} does not come after {out[i - 1].timestep}; allowed: "
                "strictly decreasing timesteps")
    if out[0].branch:
        raise FlexoptError(
            f"the first step is partial (branch {out[0].branch}); allowed: a full first step "
            "(a partial step reuses features of an earlier full step)")
    return out


@dataclass(frozen=True)
class Schedule:
    """A runnable schedule. Build with `full`, `uniform`, `from_candidate`, `placed`, `spaced`,
    `load`.

    Segment-wise (`steps` is None): `segment_length` and `segments` say which slots of the
    sampler's uniform `N·L` grid run full, partial or null. Placed (`steps` given): each U-Net
    call's timestep and type; `segments` is empty and `segment_length` 1.
    """

    sampler: str
    t_ref: int
    segment_length: int
    segments: tuple[Segment, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    steps: tuple[PlacedStep, ...] | None = None

    def __post_init__(self) -> None:
        check_sampler(self.sampler)
        _positive_int("t_ref", self.t_ref)
        if self.steps is not None:
            object.__setattr__(self, "steps", _check_placed(self.steps))
            if self.segments:
                raise FlexoptError("a placed-step schedule has no segments; give steps or "
                                   "segments, not both")
            object.__setattr__(self, "segment_length", 1)
            object.__setattr__(self, "segments", ())
            return
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
        cls, candidate: Candidate, space: Any, sampler: str = "ddim", **meta: Any
    ) -> Schedule:
        """The schedule of a search candidate; its `SearchSpace` checks it and gives `t_ref` and
        `L`."""
        space.check(candidate)
        return cls(sampler, space.t_ref, space.segment_length, candidate.segments, dict(meta))

    @classmethod
    def placed(cls, sampler: str, t_ref: int, steps: Any, **meta: Any) -> Schedule:
        """A placed-step schedule (`flexopt.schedule/2`): `steps` are `PlacedStep`s or
        `(timestep, branch)` pairs, timesteps strictly decreasing, the first step full."""
        return cls(sampler, t_ref, 1, (), dict(meta), steps=_check_placed(steps))

    @classmethod
    def spaced(cls, t_ref: int, k: int, spacing: str = "uniform", sampler: str = "ddim",
               train_timesteps: int = 1000, offset: int = 0) -> Schedule:
        """`k` full steps at `spacing` ("uniform": the sampler's own k-step grid; "quadratic":
        the DDIM paper's CIFAR-10 spacing) as a placed-step schedule."""
        ts = spaced_timesteps(k, train_timesteps, spacing, offset)
        return cls.placed(sampler, t_ref, [PlacedStep(t) for t in ts])

    # ------------------------------------------------------------------------ properties
    @property
    def is_placed(self) -> bool:
        """True for a placed-step schedule (format 2), False for a segment-wise one."""
        return self.steps is not None

    @property
    def timesteps(self) -> tuple[int, ...] | None:
        """A placed-step schedule's timesteps (None: the sampler spaces the grid)."""
        return None if self.steps is None else tuple(s.timestep for s in self.steps)

    @property
    def candidate(self) -> Candidate:
        if self.steps is not None:
            raise FlexoptError("a placed-step schedule (flexopt.schedule/2) has no segments")
        return Candidate(self.segments)

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def grid_length(self) -> int:
        """`N · L`: the base grid has that many timesteps, spaced as the sampler spaces them (a
        placed-step schedule: its own timesteps, one slot per step)."""
        if self.steps is not None:
            return len(self.steps)
        return self.n_segments * self.segment_length

    @property
    def nfe(self) -> int:
        """Number of U-Net calls."""
        return len(self.steps) if self.steps is not None else self.candidate.nfe

    def step_types(self) -> list[StepType]:
        """Step type of each base-grid slot."""
        if self.steps is not None:
            return [s.kind for s in self.steps]
        return self.candidate.step_types(self.segment_length)

    def slot_branches(self) -> list[int | None]:
        """Branch of each base-grid slot (None except on partial slots)."""
        if self.steps is not None:
            return [s.branch or None for s in self.steps]
        return self.candidate.slot_branches(self.segment_length)

    def slot_orders(self) -> list[int]:
        """DPM-Solver order of each slot: its segment's interval (SPEC §1); placed steps run
        second order (DPM-Solver++(2M)), history permitting."""
        if self.steps is not None:
            return [PLACED_ORDER] * len(self.steps)
        return [s.interval for s in self.segments for _ in range(self.segment_length)]

    def step_string(self) -> str:
        if self.steps is not None:
            return " ".join(map(str, self.steps))
        return self.candidate.step_string(self.segment_length)

    # ------------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        if self.steps is not None:
            d2: dict[str, Any] = {
                "format": FORMAT_V2, "sampler": self.sampler, "t_ref": self.t_ref,
                "timesteps": [s.timestep for s in self.steps],
                "step_types": [s.label() for s in self.steps],
            }
            if self.meta:
                d2["meta"] = self.meta
            return d2
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
        if data.get("format") not in FORMATS:
            raise FlexoptError(
                f"{source}: format {data.get('format')!r} is not supported; allowed: "
                f"{', '.join(map(repr, FORMATS))}"
            )
        if data["format"] == FORMAT_V2:
            return cls._from_dict_v2(data, source)
        _check_keys(data, source, _KEYS, ("sampler", "t_ref", "segment_length", "segments"))
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
    def _from_dict_v2(cls, data: dict[str, Any], source: str) -> Schedule:
        _check_keys(data, source, _KEYS_V2, ("sampler", "t_ref", "timesteps", "step_types"))
        ts, types = data["timesteps"], data["step_types"]
        if not isinstance(ts, list) or not isinstance(types, list) or len(ts) != len(types):
            raise FlexoptError(f"{source}: 'timesteps' and 'step_types' must be lists of the "
                               "same length (one timestep and one step type per U-Net call)")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise FlexoptError(f"{source}: 'meta' must be an object")
        try:
            steps = [PlacedStep(t, parse_step_type(k, f"step {i}"))
                     for i, (t, k) in enumerate(zip(ts, types, strict=True))]
            return cls.placed(data["sampler"], data["t_ref"], steps, **meta)
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
                               "flexopt.space.schedule JSON file (see `flexopt export`)") from None
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
        if self.steps is not None:
            return f"{self.sampler} t_ref={self.t_ref} NFE={self.nfe}: {self.step_string()}"
        return (
            f"{self.sampler} t_ref={self.t_ref} L={self.segment_length} "
            f"N={self.n_segments} NFE={self.nfe}: {self.step_string()}"
        )
