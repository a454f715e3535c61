"""Static PNG of the Pareto plot, for papers: matplotlib, or plotly shot by a headless browser.

matplotlib is preferred (no browser, vector-sharp at any dpi); without it the plotly figure of the
HTML report is rendered by a Chromium/Chrome found on the machine. Neither: one clear error.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from flexopt.errors import FlexoptError
from flexopt.files import make_parent, write_error
from flexopt.report.browser import find_browser, screenshot
from flexopt.report.compare import Comparison, comparison_series
from flexopt.report.data import StudyReport
from flexopt.report.figures import budget_label, comparison_figure, pareto_figure
from flexopt.report.series import (
    GREY,
    MacsUnit,
    Series,
    log_scale,
    metric_label,
    pareto_series,
)

PNG_BACKENDS = ("auto", "matplotlib", "browser")
_SIZE = (1000, 600)  # browser backend: pixels


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def pick_backend(backend: str = "auto") -> str:
    """The backend to use, or an error saying what to install."""
    if backend not in PNG_BACKENDS:
        allowed = ", ".join(PNG_BACKENDS)
        raise FlexoptError(f"PNG backend {backend!r} is unknown; allowed: {allowed}")
    if backend in ("auto", "matplotlib") and has_matplotlib():
        return "matplotlib"
    if backend in ("auto", "browser") and find_browser() is not None:
        return "browser"
    wanted = {"auto": "matplotlib (pip install matplotlib) or a Chromium/Chrome browser "
                      "(e.g. apt-get install chromium)",
              "matplotlib": "matplotlib (pip install matplotlib)",
              "browser": "a Chromium/Chrome browser on PATH or $FLEXOPT_BROWSER "
                         "(e.g. apt-get install chromium)"}[backend]
    raise FlexoptError(f"static PNG export needs {wanted}; neither is available here")


def png_path(path: str | os.PathLike[str]) -> Path:
    """`path`, refused unless it ends in .png: matplotlib would pick another format from the
    suffix (or add .png to a bare name, so the file written is not the one named)."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        got = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise FlexoptError(
            f"PNG file {str(path)!r} has {got}; allowed: a name ending in .png (e.g. pareto.png)"
        )
    return out


def export_pareto_png(
    report: StudyReport, path: str | os.PathLike[str], backend: str = "auto", dpi: int = 200
) -> Path:
    """Write the Pareto plot as a PNG; returns the path."""
    out = png_path(path)
    chosen = pick_backend(backend)
    make_parent(out)
    if chosen == "matplotlib":
        unit = MacsUnit.for_values([r.avg_macs for r in report.evaluated]
                                   + [report.full_macs or 0])
        budgets = ([] if report.max_avg_macs is None
                   else [(report.max_avg_macs, "budget", GREY)])
        return _matplotlib(pareto_series(report), budgets, unit, metric_label(report),
                           report.full_macs, [r.rfid for r in report.evaluated], out, dpi)
    return _browser(pareto_figure(report), out)


def export_comparison_png(
    c: Comparison, path: str | os.PathLike[str], backend: str = "auto", dpi: int = 200
) -> Path:
    """Write the comparison plot (several studies, `html.build_comparison`) as a PNG."""
    out = png_path(path)
    chosen = pick_backend(backend)
    make_parent(out)
    if chosen == "matplotlib":
        points = c.points
        unit = MacsUnit.for_values([r.avg_macs for r in points] + [c.full_macs or 0])
        several = len(c.studies) > 1
        budgets = [(limit, budget_label(limit, studies, several),
                    studies[0].colour if len(studies) == 1 and several else GREY)
                   for limit, studies in c.budgets()]
        return _matplotlib(comparison_series(c), budgets, unit, c.metric, c.full_macs,
                           [r.rfid for r in points], out, dpi)
    return _browser(comparison_figure(c), out)


def _matplotlib(series: list[Series], budgets: list[tuple[float, str, str]], unit: MacsUnit,
                metric: str, full_macs: float | None, values: list[float], out: Path,
                dpi: int) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for s in series:
        xs = [unit(r.avg_macs) for r in s.rows]
        ys = [r.rfid for r in s.rows]
        if s.line:
            ax.step(xs, ys, where="post", color=s.colour, lw=1.5, zorder=3)
        face = "none" if s.outline_only else s.colour
        ax.scatter(xs, ys, s=s.size**2 * 0.6, marker=s.marker, facecolors=face,
                   edgecolors=s.colour, label=s.name, zorder=4 if s.line else 2)
    for limit, label, colour in budgets:
        ax.axvline(unit(limit), ls="--", color=colour, lw=1, label=label)
    if log_scale(values):
        ax.set_yscale("log")
    ax.set_xlabel(unit.label)
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.grid(alpha=0.3)
    if full_macs:
        full = unit(full_macs)

        def to_speedup(x):  # speedup = full / avg MACs, its own inverse
            with np.errstate(divide="ignore"):
                return full / np.asarray(x, dtype=float)

        top = ax.secondary_xaxis("top", functions=(to_speedup, to_speedup))
        top.set_xlabel("speedup (×)")
    ax.legend(fontsize=7, loc="best")
    try:
        fig.savefig(out, dpi=dpi, format="png")
    except OSError as err:
        raise write_error(out, err) from None
    finally:
        plt.close(fig)
    return out


def _browser(fig: go.Figure, out: Path) -> Path:
    fig.update_layout(width=_SIZE[0], height=_SIZE[1], margin={"l": 70, "r": 20, "t": 90, "b": 60})
    page = pio.to_html(fig, full_html=True, include_plotlyjs=True,
                       config={"staticPlot": True, "displayModeBar": False})
    page = page.replace("<head>", "<head><style>body{margin:0}</style>", 1)
    with tempfile.TemporaryDirectory(prefix="flexopt-png-") as tmp:
        html_path = Path(tmp) / "pareto.html"
        html_path.write_text(page, encoding="utf-8")
        return screenshot(html_path, out, size=_SIZE)
