"""`flexopt search` / `flexopt export` end to end on a tiny model: budget, mutations, baselines,
export → rfid reproduces the recorded score, kill and resume."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.search.storage import study_names
from flexopt.search.study import TrialCounts
from flexopt.space.schedule import Schedule

SPACE = ["--segments", "4,5", "--branches", "1,2", "--intervals", "1,2,3,4", "--t-ref", "20"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


CONFIG = """
[space]
segments = [3]
branches = [3]
intervals = [1]

[evolution]
population = 6
n_p = 4
n_c = 3
n_u = 20
"""


def search_args(model_dir, tmp_path, weights, n_trials, name="s", extra=()):
    config = tmp_path / "study.toml"
    config.write_text(CONFIG)  # small evolution settings; its space is overridden by the flags
    return ["search", config, "--model", model_dir, "--budget", "2x", *SPACE, "--num-images", 8,
            "--batch-size", 8, "--n-trials", n_trials, "--storage",
            f"sqlite:///{tmp_path / 'study.db'}", "--study-name", name, "--device", "cpu",
            "--cache-dir", tmp_path / "cache", "--inception-weights", weights, *extra]


def test_search_export_and_rfid_reproduces(model_dir, tmp_path, inception_weights):
    r = run(*search_args(model_dir, tmp_path, inception_weights, 30, extra=["--search-seed", 0]))
    assert r.exit_code == 0, r.output
    assert "enqueued" in r.output and "best searched under budget" in r.output
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name="s", storage=storage)
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    counts = TrialCounts.of_study(study)  # --n-trials: searched candidates, baselines extra
    assert counts.searched == 30 and counts.baselines > 0
    assert f"30 searched candidates, {counts.baselines} baselines" in r.output
    limit = None
    searched = [t for t in done if "baseline" not in t.user_attrs]
    assert searched and any(t.user_attrs["origin"] == "mutation" for t in searched)
    full = re.search(r"full step (\S+) MACs", r.output)
    assert full
    for t in searched:
        limit = t.user_attrs["avg_macs"] * t.user_attrs["speedup"] / 2  # full / 2 (budget 2x)
        assert t.user_attrs["avg_macs"] < limit
        assert t.constraints["avg_macs"] <= 0
        if t.user_attrs["origin"] == "mutation":
            parent = study.trials[t.user_attrs["parent"]]
            (m,) = t.user_attrs["mutation"]
            n_child, n_parent = t.params["n_segments"], parent.params["n_segments"]
            if "split" in m or "merge" in m:
                assert n_child != n_parent
            else:
                _, seg, dim, change = m.split()
                old, new = map(int, change.split("->"))
                assert parent.params[f"seg_{seg}_{dim}"] == old
                assert t.params[f"seg_{seg}_{dim}"] == new
                others = {k: v for k, v in t.params.items() if k != f"seg_{seg}_{dim}"}
                assert others == {k: v for k, v in parent.params.items()
                                  if k != f"seg_{seg}_{dim}"}
    baselines = {t.user_attrs["baseline"] for t in done if "baseline" in t.user_attrs}
    assert "deepcache n=10 b=2" in baselines and any(b.startswith("teacher") for b in baselines)
    # by default only the baselines under the budget are evaluated (--baselines all: every one)
    assert all(t.constraints["avg_macs"] <= 0 for t in done if "baseline" in t.user_attrs)
    # Export the best and score it again through `flexopt rfid`: the same number.
    out = tmp_path / "best.json"
    r = run("export", "--storage", storage, "--study-name", "s", "--best", "--out", out)
    assert r.exit_code == 0, r.output
    meta = Schedule.load(out).meta
    r = run("rfid", model_dir, "--schedule", out, "--num-images", 8, "--batch-size", 8,
            "--device", "cpu", "--cache-dir", tmp_path / "cache",
            "--inception-weights", inception_weights)
    assert r.exit_code == 0, r.output
    assert "teacher cache reused" in r.output
    value = float(re.search(r"^rfid: (\S+)$", r.output, re.M).group(1))
    assert value == pytest.approx(meta["objective"][0], rel=1e-5)
    # Re-running the finished command does nothing more (it resumes, never duplicates).
    r = run(*search_args(model_dir, tmp_path, inception_weights, 30))
    assert r.exit_code == 0 and "ran 0 trials this time" in r.output
    assert optuna.get_all_study_names(storage) == ["s"]


def complete_trials(path) -> int:
    """Complete trials in a SQLite study, read-only: Optuna's `load_study` would create the
    schema that the search is creating at that moment ('table … already exists' on either side)."""
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or locked for a write
        return 0


def test_killed_search_resumes(model_dir, tmp_path, inception_weights):
    # a 2 s heartbeat: the killed run's trial is presumed dead 4 s after the kill and re-run
    args = [str(a) for a in search_args(model_dir, tmp_path, inception_weights, 14, name="k",
                                        extra=["--no-baselines", "--no-artifacts",
                                               "--heartbeat", "2"])]
    cmd = [sys.executable, "-m", "flexopt", *args]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(1)
            if complete_trials(tmp_path / "study.db") >= 3:
                break
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = optuna.load_study(study_name="k", storage=storage)
    n_before = len(before.get_trials(states=[optuna.trial.TrialState.COMPLETE]))
    assert 3 <= n_before < 14
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    after = optuna.load_study(study_name="k", storage=storage)
    finished = after.get_trials(states=[optuna.trial.TrialState.COMPLETE,
                                        optuna.trial.TrialState.PRUNED])
    assert TrialCounts.of_study(after).searched == 14  # the sampler's seed baselines: extra
    assert study_names(storage) == ["k"]  # a lock the kill left behind is not a study
    # the trial running at the kill was re-run: every trial is finished or its failed original
    fails = after.get_trials(states=[optuna.trial.TrialState.FAIL])
    assert len(fails) <= 1 and not after.get_trials(states=[optuna.trial.TrialState.RUNNING])
    if fails:
        retried = [t for t in finished if t.system_attrs.get("failed_trial") == fails[0].number]
        # a kill between two of its suggestions leaves the original with only some parameters;
        # the retry keeps every one it had and samples the rest
        assert retried and fails[0].params.items() <= retried[0].params.items()
    # The trials of the killed run are still there, untouched: the study continued.
    kept = {t.number: (t.params, t.values) for t in after.trials}
    for t in before.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        assert kept[t.number] == (t.params, t.values)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: [x for x in a if x not in ("--budget", "2x")], "no budget"),
        (lambda a: a[:2] + a[4:], "no model"),
        (lambda a: [("1,13" if x == "1,2" else x) for x in a], "branch choice 13 is beyond"),
        (lambda a: [("2q" if x == "2x" else x) for x in a], "budget '2q' is invalid"),
        (lambda a: [("nope://x" if str(x).startswith("sqlite") else x) for x in a],
         "storage 'nope://x' is not supported; allowed: sqlite:///FILE"),
        (lambda a: [("postgresql://u@127.0.0.1:1/x" if str(x).startswith("sqlite") else x)
                    for x in a], "storage 'postgresql://u@127.0.0.1:1/x'"),
        (lambda a: [("sqlite:////no/such/dir/x.db" if str(x).startswith("sqlite") else x)
                    for x in a], "cannot be opened"),
    ],
)
def test_search_bad_input(model_dir, tmp_path, inception_weights, change, message):
    r = run(*change(search_args(model_dir, tmp_path, inception_weights, 1)))
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_resume_with_other_budget_refused_and_export_errors(model_dir, tmp_path,
                                                            inception_weights):
    args = search_args(model_dir, tmp_path, inception_weights, 2,
                       extra=["--no-baselines", "--no-artifacts"])
    assert run(*args).exit_code == 0
    r = run(*[("3x" if x == "2x" else x) for x in args])
    assert r.exit_code == 2 and "created with other settings" in r.output
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    r = run("export", "--storage", storage, "--study-name", "zz", "--best", "--out", "x.json")
    assert r.exit_code == 2 and "study 'zz' is not in" in r.output
    r = run("export", "--storage", storage, "--study-name", "s", "--trial", 99, "--out", "x.json")
    assert r.exit_code == 2 and "trial 99 is not in study 's'" in r.output
    r = run("export", "--storage", storage, "--study-name", "s", "--out", "x.json")
    assert r.exit_code == 2 and "exactly one of --trial N and --best" in r.output
