"""`flexopt report` over several studies: one page comparing search spaces (issue 16).

Three studies of one synthetic model: `seg-2x` (a real small segment-wise search, `build_study`),
`ts-2x` and `hyb-3x` (placed-step schedules written as trials, the way a timesteps / hybrid
search records them: its schedule as a `flexopt.schedule/2` user attr). `seg-2x` and `ts-2x` share
one SQLite file, `hyb-3x` has its own; the baselines of `seg-2x` are copied into the others (the
same baselines, to be drawn once).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from PIL import Image
from test_report_data import build_study

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.report.compare import compare, find_studies
from flexopt.report.data import collect, trials_frame
from flexopt.report.figures import comparison_figure, placed_spans, strip_figure
from flexopt.report.html import build_comparison, build_report
from flexopt.report.png import export_comparison_png
from flexopt.search.study import load_study, settings_of
from flexopt.space.schedule import Schedule

SETTINGS = "flexopt:settings"


@dataclass(frozen=True)
class Studies:
    a: str  # storage of seg-2x, ts-2x (and the odd ones out)
    b: str  # storage of hyb-3x alone
    root: Path


def _placed(steps: list[tuple[int, int]]) -> Schedule:
    return Schedule.placed("ddim", 20, steps)


def _macs(s: Schedule) -> float:  # ImagingEvaluator's costs: full 1, partial 0.1·branch
    return sum(1 if b == 0 else 0.1 * b for b in (p.branch for p in s.steps)) / s.t_ref


def _write_study(storage: str, name: str, settings: dict, schedules: list[Schedule],
                 baselines: list[optuna.trial.FrozenTrial], limit: float) -> None:
    study = optuna.create_study(storage=storage, study_name=name)
    study.set_user_attr(SETTINGS, settings)
    for t in baselines:
        study.add_trial(optuna.trial.create_trial(
            state=t.state, values=t.values, params=t.params, distributions=t.distributions,
            user_attrs=t.user_attrs, system_attrs=t.system_attrs))
    for i, s in enumerate(schedules):
        macs = _macs(s)
        over = macs >= limit
        attrs = {"avg_macs": macs, "speedup": 1 / macs, "nfe": s.nfe, "schedule": s.to_dict(),
                 "origin": "random"}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if over else optuna.trial.TrialState.COMPLETE,
            values=None if over else [3.0 - 0.2 * i - 4 * macs], user_attrs=attrs,
            system_attrs={"constraints": [macs - limit]}))


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Studies:
    root = tmp_path_factory.mktemp("compare")
    seg = build_study(root, n_trials=30, name="seg-2x")
    base = settings_of(load_study(seg.storage, "seg-2x"))
    baselines = [t for t in load_study(seg.storage, "seg-2x").get_trials()
                 if "baseline" in t.user_attrs]
    ts = [_placed([(t, 0) for t in ts]) for ts in
          ([950, 700, 400, 150], [980, 800, 600, 400, 200, 50], [900, 500, 100],
           [990, 900, 800, 700, 600, 500, 400, 300])]
    _write_study(seg.storage, "ts-2x", {**base, "space": "timesteps"}, ts, baselines, 0.3)
    hyb = [_placed(st) for st in ([(950, 0), (800, 2), (600, 0), (400, 1), (100, 0)],
                                  [(990, 0), (900, 3), (700, 3), (500, 0), (300, 2), (50, 1)],
                                  [(900, 0), (600, 1), (300, 0)])]
    other = f"sqlite:///{root / 'other.db'}"
    budget = {"macs": 0.25, "speedup": None}
    _write_study(other, "hyb-3x", {**base, "space": "hybrid", "budget": budget}, hyb,
                 baselines, 0.25)
    _write_study(seg.storage, "other-seed", {**base, "seed": 7}, ts[:2], [], 0.3)
    _write_study(seg.storage, "other-model", {**base, "model": "Other"}, ts[:2], [], 0.3)
    return Studies(seg.storage, other, root)


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _between(page: str, start: str, end: str) -> str:
    return page[page.index(start):page.index(end, page.index(start))]


def test_cli_compares_three_studies_of_two_storages(studies, tmp_path):
    out, png = tmp_path / "cmp.html", tmp_path / "cmp.png"
    res = _cli("report", "--storage", studies.a, "--storage", studies.b,
               "--study-name", "seg-2x,ts-2x", "--out", str(out), "--cdn", "--png", str(png))
    assert res.exit_code == 0, res.output
    assert "3 studies compared (best searched: seg-2x #" in res.output
    assert Image.open(png).size[0] > 800
    page = out.read_text()
    assert page.count("Plotly.newPlot(") == 1 + 3 * 3  # the joint plot, 3 figures per study
    assert page.count('src="https://cdn.plot.ly') == 1
    plot = _between(page, '<div id="compare"', "<h2>Best trial")
    for i, label in enumerate(("seg-2x · segments", "ts-2x · timesteps", "hyb-3x · hybrid"), 1):
        assert f'"name":{json.dumps(label)}' in plot, label
        assert f'"name":{json.dumps(label + " front")}' in plot, label
        assert f'<h2 id="study-{i}">{label}</h2>' in page  # then its own sections
        assert f'<div id="s{i}-pareto"' in page and f'<div id="s{i}-strips"' in page
    # the baselines once: each deepcache/teacher label in one hover text of the plot
    base = load_study(studies.a, "seg-2x").get_trials()
    names = [t.user_attrs["baseline"] for t in base if "baseline" in t.user_attrs
             and t.values is not None]
    assert names
    for name in names:
        assert plot.count(f" {name}\\u003cbr") == 1, name  # hover: "<b>#2</b> NAME<br>"
    # each budget a labelled line: 0.3 for seg-2x and ts-2x, 0.25 for hyb-3x
    assert "budget 0.3 (seg-2x, ts-2x)" in plot and "budget 0.25 (hyb-3x)" in plot
    table = _between(page, "<h2>Best trial", "<h2 id=\"study-1\"")
    header = re.findall(r"<th>([^<]+)</th>", table)
    assert header == ["study", "space", "budget", "trial", "avg MACs", "speedup", "NFE", "rFID",
                      "steps"]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td>", table)
    assert rows[:3] == [("seg-2x · segments", "segments"), ("ts-2x · timesteps", "timesteps"),
                        ("hyb-3x · hybrid", "hybrid")]
    assert [r[0] for r in rows[3:]] == ["best baseline", "best baseline"]  # two budgets
    assert '<td class="steps">900F 600P1 300F</td>' in page  # hyb-3x's Pareto table


def test_library_comparison_and_placed_strips(studies, tmp_path):
    path, c = build_comparison([studies.a], ["ts-2x", "seg-2x"],
                               tmp_path / "c.html", use_artifacts=False)
    assert [x.label for x in c.studies] == ["ts-2x · timesteps", "seg-2x · segments"]
    keys = [(r.label, round(r.avg_macs, 9)) for r in c.baselines]
    assert len(keys) == len(set(keys)) and all(r.kind != "searched" for r in c.baselines)
    ts = c.studies[0]
    assert ts.best is not None and ts.best.schedule.is_placed
    assert [r.number for r in ts.front] and all(r.feasible for r in ts.front)
    fig = comparison_figure(c)
    assert {t.name for t in fig.data} >= {"ts-2x · timesteps", "seg-2x · segments front"}
    assert export_comparison_png(c, tmp_path / "c.png", backend="matplotlib", dpi=60).exists()
    # a placed step stands at its timestep on the teacher's axis; what it jumps over is null
    spans = placed_spans(_placed([(950, 0), (500, 2)]))
    assert [(cat, round(start, 3)) for cat, start, *_ in spans] == [
        ("full", 0.0), ("null", 1.0), ("partial b=2", 9.0), ("null", 10.0)]
    strips = strip_figure(ts.report)
    assert "full" in {t.name for t in strips.data}
    page = path.read_text()
    assert "timesteps (placed steps)" in page and "--no-artifacts" in page


def test_storage_with_one_study_needs_no_name(studies, tmp_path):
    pairs = find_studies([studies.b, studies.a], ["ts-2x"])
    assert pairs == [(studies.a, "ts-2x"), (studies.b, "hyb-3x")]
    with pytest.raises(FlexoptError, match=r"holds several studies; pick with --study-name: "
                                           r"other-model, other-seed, seg-2x, ts-2x"):
        find_studies([studies.a, studies.b], [])


@pytest.mark.parametrize(("other", "what"), [
    ("other-seed", "seed differs (seg-2x: 0, other-seed: 7)"),
    ("other-model", "model differs (seg-2x: 'ImagingEvaluator', other-model: 'Other')"),
])
def test_mismatched_settings_are_one_line(studies, tmp_path, other, what):
    res = _cli("report", "--storage", studies.a, "--study-name", "seg-2x",
               "--study-name", other, "--out", str(tmp_path / "x.html"))
    assert res.exit_code == 2, res.output
    assert res.output == (f"Error: studies cannot be compared: their {what}; allowed: studies "
                          "of the same model, t_ref, metric, rFID images and seed (budgets may "
                          "differ)\n")
    assert not (tmp_path / "x.html").exists()


def test_unknown_study_names_it_and_the_studies_present(studies, tmp_path):
    res = _cli("report", "--storage", studies.a, "--study-name", "seg-2x,ts-3x",
               "--out", str(tmp_path / "x.html"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert re.fullmatch(r"Error: study 'ts-3x' is not in '.*study\.db'; studies there: "
                        r"other-model, other-seed, seg-2x, ts-2x\n", res.output), res.output
    res = _cli("report", "--storage", studies.a, "--storage", studies.b,
               "--study-name", "nope", "--study-name", "hyb-3x")
    assert res.exit_code == 2
    assert res.output.startswith("Error: study 'nope' is in none of the storages; studies "
                                 "there: other-model, other-seed, seg-2x, ts-2x (in ")
    assert "hyb-3x (in" in res.output and res.output.count("\n") == 1


def test_highlight_needs_one_study(studies):
    res = _cli("report", "--storage", studies.a, "--study-name", "seg-2x,ts-2x",
               "--highlight", "3")
    assert res.exit_code == 2
    assert res.output == ("Error: --highlight names trials of one study; allowed: one study "
                          "only (not with several --study-name or --storage)\n")


def test_comparison_reads_studies_in_order(studies):
    c = compare([(studies.a, load_study(studies.a, n)) for n in ("seg-2x", "ts-2x")])
    assert c.studies[0].colour != c.studies[1].colour
    assert [round(b[0], 6) for b in c.budgets()] == [0.3]


def test_single_placed_study_report(studies, tmp_path):
    """One study of a placed-step space: the ordinary report, its steps placed by timestep."""
    path, rep = build_report(studies.a, "ts-2x", tmp_path / "ts.html", use_artifacts=False)
    page = path.read_text()
    assert "timesteps (placed steps)" in page and rep.pareto
    assert all(rep.row(n).schedule.is_placed for n in rep.pareto if rep.row(n).kind == "searched")
    frame = trials_frame(rep)
    placed = frame[frame["steps"].str.contains("F ")]
    assert len(placed) and placed["n_segments"].isna().all()


def test_settings_this_version_does_not_decode(studies, tmp_path):
    """A placed-space study without segment keys in its settings still shows its schedules."""
    base = settings_of(load_study(studies.a, "ts-2x"))
    bare = {k: v for k, v in base.items() if k not in ("segments", "branches", "intervals")}
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    _write_study(url, "bare", {**bare, "steps": [3, 8]}, [_placed([(900, 0), (500, 0)])], [],
                 0.3)
    rep = collect(load_study(url, "bare"))
    assert rep.rows[0].steps == "900F 500F"
    page = build_report(url, None, tmp_path / "b.html", use_artifacts=False)[0].read_text()
    assert "timesteps (placed steps: steps [3, 8])" in page
