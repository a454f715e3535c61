"""The Pareto plot's point series and units, independent of the drawing library.

Both backends (plotly for the HTML report, matplotlib for the paper PNG) draw exactly these
series, so the two pictures cannot disagree about what is a baseline, infeasible or best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flexopt.report.data import StudyReport, TrialRow

GREY = "#b0b0b0"
_STYLE = {  # kind → (legend name, colour, plotly symbol, matplotlib marker)
    "searched": ("searched", "#4c78a8", "circle", "o"),
    "deepcache": ("DeepCache uniform", "#f58518", "square", "s"),
    "teacher": ("teacher, fewer steps", "#54a24b", "triangle-up", "^"),
    "ddim-quad": ("DDIM, quadratic spacing", "#9d755d", "diamond", "D"),
    "baseline": ("other baseline", "#b279a2", "cross", "P"),
}
FRONT_COLOUR = "#e45756"


@dataclass(frozen=True)
class Series:
    """Points drawn alike: name, colour, markers, and whether they are joined as a front."""

    name: str
    rows: tuple[TrialRow, ...]
    colour: str
    symbol: str  # plotly marker symbol
    marker: str  # matplotlib marker
    size: float = 8
    line: bool = False  # the Pareto front: a step line through the points
    outline_only: bool = False  # a highlight ring drawn over another series' point


@dataclass(frozen=True)
class MacsUnit:
    """Avg MACs shown in one readable unit (G, M, K or none) for the whole plot."""

    scale: float
    suffix: str

    @classmethod
    def for_values(cls, values: list[float]) -> MacsUnit:
        top = max(values, default=0.0)
        for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if top >= scale:
                return cls(scale, suffix)
        return cls(1.0, "")

    @property
    def label(self) -> str:
        return f"avg MACs ({self.suffix})" if self.suffix else "avg MACs"

    def __call__(self, macs: float) -> float:
        return macs / self.scale


def metric_label(report: StudyReport) -> str:
    """The objective's name on plots and tables (`fid`: against a data set, not the teacher)."""
    return {"rfid": "rFID", "fid": "FID vs data"}.get(report.metric, report.metric)


def pareto_series(report: StudyReport) -> list[Series]:
    """Searched and baseline points (infeasible ones grey), the front, the best, the chosen."""
    out: list[Series] = []
    points = report.evaluated
    for kind, (name, colour, symbol, marker) in _STYLE.items():
        rows = [r for r in points if r.kind == kind]
        ok = tuple(r for r in rows if r.feasible)
        over = tuple(r for r in rows if not r.feasible and not r.guard_failed)
        guarded = tuple(r for r in rows if not r.feasible and r.guard_failed)
        if ok:
            size = 6 if kind == "searched" else 9
            out.append(Series(name, ok, colour, symbol, marker, size))
        if over:
            out.append(Series(f"{name} (over budget)", over, GREY, symbol, marker, 7))
        if guarded:  # infeasible like the over-budget ones, for their CLIP score
            out.append(Series(f"{name} (under the CLIP guard)", guarded, GREY, symbol, marker,
                              7))
    if report.pareto:
        front = tuple(report.row(n) for n in report.pareto)
        out.append(Series("Pareto front", front, FRONT_COLOUR, "circle", "o", 9, line=True))
    if report.best is not None:
        out.append(Series(f"best {metric_label(report)}", (report.row(report.best),), "#222222",
                          "star", "*", 16))
    chosen = tuple(report.row(n) for n in report.chosen if report.row(n).rfid is not None)
    if chosen:
        out.append(Series("chosen", chosen, "#222222", "circle-open", "o", 18, outline_only=True))
    return out


def speedup_ticks(full_macs: float, lo: float, hi: float) -> list[tuple[float, str]]:
    """Avg-MACs positions of round speedups inside [lo, hi] (for the top axis)."""
    if lo <= 0 or hi <= 0:
        return []
    candidates = [1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100]
    ticks = [(full_macs / s, f"{s:g}×") for s in candidates if lo <= full_macs / s <= hi]
    return ticks


def log_scale(values: list[float]) -> bool:
    """Log y when the values span more than two decades (a 2-step teacher dwarfs the rest)."""
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return len(pos) > 1 and max(pos) / min(pos) > 100 and len(pos) == len(values)
