"""Plotly figures of a study: the Pareto plot, the search progress and the schedule strips."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flexopt.report.compare import ComparedStudy, Comparison, comparison_series
from flexopt.report.data import StudyReport, TrialRow
from flexopt.report.series import (
    GREY,
    MacsUnit,
    Series,
    log_scale,
    metric_label,
    pareto_series,
    speedup_ticks,
)
from flexopt.run.budget import format_macs
from flexopt.space.schedule import Schedule
from flexopt.space.steps import StepType

FULL_COLOUR = "#1f3b73"
NULL_COLOUR = "#eeeeee"
TRAIN_TIMESTEPS = 1000  # the training steps of every model flexopt runs (DDPM, LDM, SD)
PARTIAL_COLOURS = ("#fdd49e", "#fdbb84", "#fc8d59", "#ef6548", "#d7301f", "#990000")


def hover(row: TrialRow, metric: str) -> str:
    """One trial's hover text: what it is, what it runs, what it costs and scores."""
    parts = [f"<b>#{row.number}</b> {row.label if row.kind != 'searched' else ''}"]
    if row.steps:
        parts.append(f"steps {row.steps if len(row.steps) <= 80 else row.steps[:77] + '...'}")
    cost = []
    if row.avg_macs is not None:
        cost.append(f"avg MACs {format_macs(row.avg_macs)}")
    if row.speedup is not None:
        cost.append(f"{row.speedup:.2f}× faster")
    if row.nfe is not None:
        cost.append(f"NFE {row.nfe}")
    parts.append(" · ".join(cost))
    if row.rfid is not None:
        why = "under the CLIP guard" if row.guard_failed else "over budget"
        parts.append(f"{metric} {row.rfid:.4g}" + ("" if row.feasible else f" ({why})"))
    if row.clip_score is not None:
        parts.append(f"CLIP {row.clip_score:.4g}")
    if row.measured_seconds is not None and row.predicted_seconds is not None:
        parts.append(f"{row.measured_seconds:.3g} s per batch measured, "
                     f"{row.predicted_seconds:.3g} s predicted")
    return "<br>".join(parts)


def _add_series(fig: go.Figure, series: list[Series], unit: MacsUnit, metric: str,
                prefix: dict[str, str] | None = None,
                x: Callable[[TrialRow], float] | None = None) -> None:
    """One scatter trace per series; `prefix` maps a series name to a hover text head; `x` the
    horizontal position of a row (default: its avg MACs in `unit`)."""
    for s in series:
        marker: dict[str, Any] = {"color": s.colour, "symbol": s.symbol, "size": s.size}
        if s.outline_only:
            marker["line"] = {"color": s.colour, "width": 2}
        head = (prefix or {}).get(s.name, "")
        fig.add_trace(go.Scatter(
            x=[unit(r.avg_macs) if x is None else x(r) for r in s.rows],
            y=[r.rfid for r in s.rows], name=s.name,
            mode="lines+markers" if s.line else "markers", marker=marker,
            line={"shape": "hv", "color": s.colour, "width": 2} if s.line else None,
            text=[head + hover(r, metric) for r in s.rows],
            hovertemplate="%{text}<extra></extra>",
        ))


def _speedup_axis(fig: go.Figure, full: float, lo: float, hi: float) -> None:
    """Speedup ticks on a top axis sharing the avg-MACs range."""
    ticks = speedup_ticks(full, lo, hi)
    fig.update_layout(xaxis2={
        "overlaying": "x", "side": "top", "range": [lo, hi], "title": "speedup",
        "tickvals": [t for t, _ in ticks], "ticktext": [s for _, s in ticks],
        "showgrid": False,
    })
    # An invisible trace puts the top axis on the page (an axis with no data is hidden).
    fig.add_trace(go.Scatter(x=[lo, hi], y=[None, None], xaxis="x2", showlegend=False,
                             hoverinfo="skip", mode="markers"))


def _layout(fig: go.Figure, title: str, metric: str, unit: MacsUnit, lo: float, hi: float,
            values: list[float]) -> None:
    fig.update_layout(
        title=title, height=520, template="plotly_white",
        xaxis={"title": unit.label, "range": [lo, hi]},
        yaxis={"title": f"{metric} (lower is better)",
               "type": "log" if log_scale(values) else "linear"},
        legend={"orientation": "v", "x": 1.02, "y": 1}, margin={"t": 90},
    )


def pareto_figure(report: StudyReport) -> go.Figure:
    """rFID against avg MACs, speedup on the top axis, budget as a dashed line."""
    metric = metric_label(report)
    points = report.evaluated
    unit = MacsUnit.for_values([r.avg_macs for r in points] + [report.full_macs or 0.0])
    fig = go.Figure()
    _add_series(fig, pareto_series(report), unit, metric)
    xs = [unit(r.avg_macs) for r in points]
    lo, hi = min(xs) * 0.95, max(xs) * 1.05
    if report.max_avg_macs is not None:
        limit = unit(report.max_avg_macs)
        hi = max(hi, limit * 1.02)
        fig.add_vline(x=limit, line_dash="dash", line_color=GREY,
                      annotation_text=f"budget {format_macs(report.max_avg_macs)}",
                      annotation_position="top left")
    _layout(fig, f"{metric} against avg MACs", metric, unit, lo, hi, [r.rfid for r in points])
    if report.full_macs:
        _speedup_axis(fig, unit(report.full_macs), lo, hi)
    return fig


def latency_figure(report: StudyReport) -> go.Figure:
    """The second view of a latency study: rFID against measured seconds per batch, the budget
    (the teacher's predicted time over the speedup) as a dashed line."""
    metric = metric_label(report)
    series = []
    for s in pareto_series(report):
        rows = tuple(r for r in s.rows if r.measured_seconds is not None)
        if rows and not s.line:  # the front is by MACs: not drawn here
            series.append(Series(s.name, rows, s.colour, s.symbol, s.marker, s.size,
                                 outline_only=s.outline_only))
    fig = go.Figure()
    _add_series(fig, series, MacsUnit(1.0, ""), metric, x=lambda r: r.measured_seconds)
    xs = [r.measured_seconds for r in report.timed]
    lo, hi = min(xs) * 0.95, max(xs) * 1.05
    if report.max_batch_seconds is not None:
        hi = max(hi, report.max_batch_seconds * 1.02)
        fig.add_vline(x=report.max_batch_seconds, line_dash="dash", line_color=GREY,
                      annotation_text=f"budget {report.max_batch_seconds:.3g} s (predicted)",
                      annotation_position="top left")
    fig.update_layout(
        title=f"{metric} against measured wall-clock", height=480, template="plotly_white",
        xaxis={"title": "seconds per batch, measured", "range": [lo, hi]},
        yaxis={"title": f"{metric} (lower is better)",
               "type": "log" if log_scale([r.rfid for r in report.timed]) else "linear"},
        legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


def budget_label(limit: float, studies: list[ComparedStudy], several: bool) -> str:
    """`budget 300M (a, b)`: the studies are named when the plot shows several budgets."""
    names = f" ({', '.join(s.name for s in studies)})" if several else ""
    return f"budget {format_macs(limit)}{names}"


def comparison_figure(c: Comparison) -> go.Figure:
    """Several studies on one rFID-against-avg-MACs plot: each study's searched trials and front
    in its colour, the baselines once, each distinct budget a labelled dashed line."""
    metric = c.metric
    points = c.points
    unit = MacsUnit.for_values([r.avg_macs for r in points] + [c.full_macs or 0.0])
    fig = go.Figure()
    heads = {}
    for s in c.studies:
        for name in (s.label, f"{s.label} (over budget)", f"{s.label} front"):
            heads[name] = f"{html.escape(s.label)}<br>"
    _add_series(fig, comparison_series(c), unit, metric, heads)
    xs = [unit(r.avg_macs) for r in points]
    lo, hi = min(xs) * 0.95, max(xs) * 1.05
    budgets = c.budgets()
    for i, (limit, studies) in enumerate(budgets):
        x = unit(limit)
        hi = max(hi, x * 1.02)
        colour = studies[0].colour if len(studies) == 1 and len(c.studies) > 1 else GREY
        fig.add_vline(x=x, line_dash="dash", line_color=colour,
                      annotation_text=budget_label(limit, studies, len(c.studies) > 1),
                      annotation_position="top left", annotation_yshift=-16 * i,
                      annotation_font_color=colour if colour != GREY else None)
    names = ", ".join(s.label for s in c.studies)
    _layout(fig, f"{metric} against avg MACs: {names}", metric, unit, lo, hi,
            [r.rfid for r in points])
    if c.full_macs:
        _speedup_axis(fig, unit(c.full_macs), lo, hi)
    return fig


def progress_figure(report: StudyReport) -> go.Figure:
    """Best rFID (hypervolume when multi-objective) by trial and by wall-clock."""
    points = report.progress()
    multi = report.multi_objective
    what = "hypervolume (share of box)" if multi else f"best {metric_label(report)}"
    minutes = bool(points) and points[-1].elapsed_s > 120
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by trial", "by wall-clock"))
    for col, xs in ((1, [p.number for p in points]),
                    (2, [p.elapsed_s / (60 if minutes else 1) for p in points])):
        fig.add_trace(go.Scatter(
            x=xs, y=[p.value for p in points], mode="lines+markers", name=what,
            line={"shape": "hv", "color": "#4c78a8"}, showlegend=col == 1,
        ), row=1, col=col)
    if not multi:  # each evaluated candidate's own score, for context
        rows = [r for r in report.evaluated if r.kind == "searched" and r.feasible]
        fig.add_trace(go.Scatter(
            x=[r.number for r in rows], y=[r.rfid for r in rows], mode="markers",
            name=f"each trial's {metric_label(report)}", marker={"color": GREY, "size": 5},
        ), row=1, col=1)
    fig.update_xaxes(title_text="trial number", row=1, col=1)
    fig.update_xaxes(title_text="minutes" if minutes else "seconds", row=1, col=2)
    fig.update_yaxes(title_text=what, row=1, col=1)
    fig.update_layout(title="Search progress", height=380, template="plotly_white")
    return fig


def _strip_rows(report: StudyReport) -> list[TrialRow]:
    """The selected trials, then the best feasible baseline of each kind for comparison."""
    rows = [report.row(n) for n in report.selected()]
    for kind in ("deepcache", "teacher", "ddim-quad"):
        ok = [r for r in report.evaluated if r.kind == kind and r.feasible]
        if ok:
            rows.append(min(ok, key=lambda r: r.rfid))
    return [r for r in rows if r.schedule is not None]


def strip_label(row: TrialRow, metric: str) -> str:
    name = f"#{row.number}" if row.kind == "searched" else row.label
    speed = f" · {row.speedup:.2f}×" if row.speedup else ""
    score = f" · {metric} {row.rfid:.3g}" if row.rfid is not None else ""
    return f"{name}{speed}{score}"


def teacher_position(timestep: int, t_ref: int, train_timesteps: int = TRAIN_TIMESTEPS) -> float:
    """Where model timestep `t` falls on the teacher's step axis [0, t_ref]: the teacher's
    uniform grid (t = T - T/t_ref, ..., 0) puts its step i at i; clamped to the axis."""
    return min(max(t_ref * (1 - timestep / train_timesteps) - 1, 0.0), t_ref - 1.0)


def placed_spans(s: Schedule) -> list[tuple[str, float, float, str, str]]:
    """(category, start, width, text, where) of a placed-step schedule on the teacher's axis:
    each step one teacher step wide at its timestep, the timesteps it jumps over as null."""
    ts = s.timesteps or ()
    starts = [teacher_position(t, s.t_ref) for t in ts] + [float(s.t_ref)]
    out = []
    for j, step in enumerate(s.steps or ()):
        start, end = starts[j], max(starts[j + 1], starts[j])
        width = min(1.0, end - start) or 1.0
        cat = "full" if step.kind is StepType.FULL else f"partial b={step.branch}"
        out.append((cat, start, width, str(step.branch) if step.branch else "",
                    f"step {j} (t={step.timestep})"))
        if end - start > width:
            nxt = f"t={ts[j + 1]}" if j + 1 < len(ts) else "the end"
            out.append(("null", start + width, end - start - width, "",
                        f"skipped: from t={step.timestep} to {nxt}"))
    return out


def strip_figure(report: StudyReport) -> go.Figure:
    """One strip per trial: its base-grid slots coloured full / partial (by branch) / null.

    Slots are drawn on the teacher's step axis (slot j of a grid of G spans t_ref/G steps), so
    grids of different lengths line up in time; a placed-step schedule's steps stand at their
    timesteps (`placed_spans`).
    """
    metric = metric_label(report)
    rows = _strip_rows(report)
    branches = sorted({b for r in rows for b in r.schedule.slot_branches() if b is not None})
    categories: dict[str, dict[str, list[Any]]] = {}

    def add(cat: str, y: str, start: float, width: float, text: str, tip: str) -> None:
        c = categories.setdefault(cat, {"y": [], "base": [], "x": [], "text": [], "tip": []})
        for key, value in (("y", y), ("base", start), ("x", width), ("text", text), ("tip", tip)):
            c[key].append(value)

    for r in rows:
        s = r.schedule
        y = strip_label(r, metric)
        if s.is_placed:
            for cat, start, width, text, where in placed_spans(s):
                add(cat, y, start, width, text, f"{y}<br>{where}: {cat}")
            continue
        width = s.t_ref / s.grid_length
        for j, (t, b) in enumerate(zip(s.step_types(), s.slot_branches(), strict=True)):
            cat = "full" if t is StepType.FULL else ("null" if t is StepType.NULL
                                                     else f"partial b={b}")
            tip = f"{y}<br>slot {j} (segment {j // s.segment_length}): {cat}"
            add(cat, y, j * width, width, str(b) if t is StepType.PARTIAL else "", tip)
    colours = {"full": FULL_COLOUR, "null": NULL_COLOUR}
    for i, b in enumerate(branches):
        colours[f"partial b={b}"] = PARTIAL_COLOURS[min(i, len(PARTIAL_COLOURS) - 1)]
    order = ["full", *(f"partial b={b}" for b in branches), "null"]
    fig = go.Figure()
    for cat in (c for c in order if c in categories):
        c = categories[cat]
        fig.add_trace(go.Bar(
            name=cat, orientation="h", y=c["y"], x=c["x"], base=c["base"], text=c["text"],
            textposition="inside", insidetextanchor="middle", textfont={"size": 9},
            marker={"color": colours[cat], "line": {"color": "white", "width": 0.5}},
            customdata=c["tip"], hovertemplate="%{customdata}<extra></extra>",
        ))
    labels = [strip_label(r, metric) for r in rows]
    fig.update_layout(
        title="Schedules: what each step runs (full / partial with branch b / null)",
        barmode="overlay", template="plotly_white", height=140 + 34 * len(rows),
        xaxis={"title": f"teacher step (t_ref = {report.settings.get('t_ref')})",
               "range": [0, rows[0].schedule.t_ref if rows else 1]},
        yaxis={"categoryorder": "array", "categoryarray": labels[::-1], "automargin": True},
        legend={"orientation": "v", "x": 1.02, "y": 1, "traceorder": "normal"},
        bargap=0.25, uniformtext={"minsize": 7, "mode": "hide"},
    )
    return fig
