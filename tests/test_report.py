"""`flexopt report` / `flexopt trials`: the HTML page, the CSV, the static PNG, user errors."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from test_report_data import build_study

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.report.data import collect
from flexopt.report.html import FIGURE_IDS, build_report
from flexopt.report.png import export_pareto_png, pick_backend
from flexopt.search.study import load_study


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("report"))


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_report_page_holds_every_section(built, tmp_path):
    path, rep = build_report(built.storage, "demo", tmp_path / "r.html", highlight=(20,))
    page = path.read_text()
    for div in FIGURE_IDS:
        assert f'<div id="{div}" class="plotly-graph-div"' in page
    assert page.count("Plotly.newPlot(") == len(FIGURE_IDS)
    assert 'src="https://cdn.plot.ly' not in page and path.stat().st_size > 3e6  # embedded
    for text in ("DeepCache uniform", "teacher, fewer steps", "Pareto front", "best rFID",
                 "chosen", "over budget", "partial b=", "Search progress"):
        assert text in page, text
    # Teacher grid plus one per selected trial (all evaluated, so all have grids).
    samples = page[page.index("<h2>Samples"):page.index("<h2>Search progress")]
    assert samples.count('src="data:image/png;base64,') == 1 + len(rep.selected())
    table = page[page.index("<h2>Pareto trials"):page.index("<h2>Schedules")]
    header = re.findall(r"<th>([^<]+)</th>", table)
    assert {"trial", "avg MACs", "NFE", "speedup", "rFID"} <= set(header)
    assert [int(n) for n in re.findall(r"<tr>\s*<td>(\d+)</td>", table)] == rep.pareto


def test_report_cdn_and_no_artifacts(built, tmp_path):
    path, _ = build_report(built.storage, None, tmp_path / "r.html", cdn=True,
                           use_artifacts=False)
    page = path.read_text()
    assert 'src="https://cdn.plot.ly' in page and path.stat().st_size < 5e5
    assert "<img" not in page and "--no-artifacts" in page


def test_report_without_grids_says_why(tmp_path):
    b = build_study(tmp_path, n_trials=20, grids=False)
    page = build_report(b.storage, None, tmp_path / "r.html")[0].read_text()
    assert "No sample grids: the artifact directory" in page


def test_cli_report_trials_and_png(built, tmp_path):
    out, png, csv = tmp_path / "r.html", tmp_path / "p.png", tmp_path / "t.csv"
    res = _cli("report", "--storage", built.storage, "--out", str(out), "--png", str(png),
               "--highlight", "20", "--cdn")
    assert res.exit_code == 0, res.output
    assert re.search(r"wrote .*r\.html .*Pareto trials, best #\d+", res.output)
    assert Image.open(png).size[0] > 800
    res = _cli("trials", "--storage", built.storage, "--study-name", "demo", "--pareto",
               "--csv", str(csv))
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(csv)
    rep = collect(load_study(built.storage, "demo"))
    assert list(frame["trial"]) == rep.pareto
    assert frame["rfid"].is_monotonic_decreasing and frame["avg_macs"].is_monotonic_increasing
    res = _cli("trials", "--storage", built.storage, "--csv", "-")
    assert len(pd.read_csv(io.StringIO(res.output))) == len(rep.rows)
    res = _cli("trials", "--storage", built.storage)
    assert "deepcache n=5 b=3" in res.output and "3/5×4" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--storage", "sqlite:///missing.db"], "storage file 'missing.db' does not"),
        (["report", "--study-name", "nope"], "study 'nope' is not in .*studies there: demo"),
        (["report", "--storage", "postgresql://h/db", "--no-artifacts"], "cannot be opened|driver"),
        (["report", "--highlight", "a,b"], "expected trial numbers"),
        (["trials", "--study-name", "x"], "study 'x' is not in"),
        (["dashboard", "--artifacts", "missing-dir"], "artifact directory 'missing-dir' does not"),
    ],
)
def test_cli_user_errors_are_one_line(built, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    if "--storage" not in args:
        args = [args[0], "--storage", built.storage, *args[1:]]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert re.search(message, res.output), res.output
    assert "Traceback" not in res.output


def test_png_backends(built, tmp_path, monkeypatch):
    rep = collect(load_study(built.storage, "demo"))
    path = export_pareto_png(rep, tmp_path / "m.png", backend="matplotlib", dpi=80)
    assert Image.open(path).size[0] > 300
    monkeypatch.setattr("flexopt.report.png.has_matplotlib", lambda: False)
    monkeypatch.setattr("flexopt.report.png.find_browser", lambda: None)
    with pytest.raises(FlexoptError, match=r"needs matplotlib .* or a Chromium/Chrome browser"):
        pick_backend("auto")
    with pytest.raises(FlexoptError, match="PNG backend 'svg' is unknown"):
        pick_backend("svg")
