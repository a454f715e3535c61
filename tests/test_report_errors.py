"""`flexopt report` / `trials` / `dashboard`: a user's mistake is one clear line, not a traceback.

The study is one baseline trial (no searched candidate, so no Pareto trial): enough for every
check here, and quick to build.
"""

from __future__ import annotations

import errno
import socket

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState
from test_report_data import BuiltStudy, build_study

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.report.commands import NO_PARETO
from flexopt.report.dashboard import run_dashboard
from flexopt.report.html import write_text_atomic
from flexopt.report.png import png_path
from flexopt.search.study import load_study


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> BuiltStudy:
    return build_study(tmp_path_factory.mktemp("report-errors"), n_trials=1, grids=False)


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_line_error(res, message: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output == f"Error: {message}\n", res.output


def test_dashboard_port_in_use(built):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _cli("dashboard", "--storage", built.storage, "--no-artifacts", "--port", str(port))
    _one_line_error(res, f"port {port} is in use; allowed: a free port (--port)")


def test_dashboard_port_taken_after_the_check(built, monkeypatch):
    def taken(*_args, **_kwargs):
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr("optuna_dashboard.run_server", taken)
    with pytest.raises(FlexoptError, match=r"^port 8931 is in use; allowed: a free port"):
        run_dashboard(built.storage, "127.0.0.1", 8931, None)


@pytest.mark.parametrize(("name", "got"), [("p.txt", "suffix '.txt'"), ("noext", "no suffix")])
def test_report_png_must_end_in_png(built, tmp_path, name, got):
    png, out = tmp_path / name, tmp_path / "r.html"
    res = _cli("report", "--storage", built.storage, "--out", str(out), "--png", str(png))
    _one_line_error(res, f"PNG file {str(png)!r} has {got}; allowed: a name ending in .png "
                         "(e.g. pareto.png)")
    assert list(tmp_path.iterdir()) == []  # refused before the report is drawn


def test_png_path_takes_any_case():
    assert png_path("fig/Pareto.PNG").name == "Pareto.PNG"


def test_trials_csv_creates_folders(built, tmp_path):
    csv = tmp_path / "nodir" / "sub" / "x.csv"
    res = _cli("trials", "--storage", built.storage, "--csv", str(csv))
    assert res.exit_code == 0, res.output
    n = len(load_study(built.storage, None).get_trials(states=[TrialState.COMPLETE,
                                                              TrialState.PRUNED]))
    assert n > 1 and res.output == f"wrote {csv} ({n} trials)\n"  # 1 searched + the baselines
    assert csv.read_text().startswith("trial,kind,label,")


def test_trials_csv_write_error_gives_the_reason(built, tmp_path):
    (tmp_path / "afile").write_text("")
    csv = tmp_path / "afile" / "x.csv"
    res = _cli("trials", "--storage", built.storage, "--csv", str(csv))
    _one_line_error(res, f"cannot write {str(csv)!r}: {str(tmp_path / 'afile')!r} is a file, "
                         "not a folder")


def test_report_out_write_error_gives_the_reason(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(FlexoptError, match=r"'.*afile' is a file, not a folder$"):
        write_text_atomic(tmp_path / "afile" / "r.html", "<html></html>")


def test_trials_csv_error_without_strerror_keeps_the_message(built, tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):  # like pandas' own OSError: a message, no strerror
        raise OSError("Cannot save file into a non-existent directory: 'gone'")

    monkeypatch.setattr("pandas.DataFrame.to_csv", refuse)
    csv = tmp_path / "x.csv"
    res = _cli("trials", "--storage", built.storage, "--csv", str(csv))
    _one_line_error(res, f"cannot write {str(csv)!r}: Cannot save file into a non-existent "
                         "directory: 'gone'")


def test_trials_pareto_when_there_is_none(tmp_path):
    # a budget under every candidate: only the baselines run (evaluated, all infeasible)
    over = build_study(tmp_path, n_trials=0, grids=False, budget="0.01")
    res = _cli("trials", "--storage", over.storage, "--pareto")
    assert res.exit_code == 0, res.output
    assert res.output == f"{NO_PARETO}\n"
