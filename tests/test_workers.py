"""Workers sharing one study, as users run them: 3 `flexopt search` processes started at once on
an empty PostgreSQL database (one killed mid-trial), 2 workers through the gRPC storage proxy,
and Ctrl-C then a re-run. Tiny model, 4 images per candidate."""

from __future__ import annotations

import collections
import functools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import tiny
from optuna.trial import TrialState
from pgserver import PASSWORD, free_port, postgres
from test_search_cli import CONFIG  # small evolution settings; flags override its space

from flexopt.search.baselines import BASELINES_ATTR
from flexopt.search.loop import WORKER_ATTR
from flexopt.search.sampler import KEY_ATTR
from flexopt.search.storage import make_storage, study_names
from flexopt.search.study import PRUNED_AT_ATTR, TrialCounts

optuna.logging.set_verbosity(optuna.logging.WARNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# one thread each: three workers and the test share two cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim"))


@pytest.fixture(scope="module")
def pg_url():
    with postgres() as url:
        yield url


def worker_cmd(model_dir: str, tmp_path: Path, weights: str, storage: str, name: str,
               n_trials: int, *extra: str) -> list[str]:
    config = tmp_path / "study.toml"
    config.write_text(CONFIG)
    return [sys.executable, "-m", "flexopt", "search", str(config), "--model", model_dir,
            "--budget", "2x", "--segments", "3,4", "--branches", "1,2", "--intervals", "1,2",
            "--t-ref", "8", "--num-images", "4", "--batch-size", "4", "--device", "cpu",
            "--n-trials", str(n_trials), "--storage", storage, "--study-name", name,
            "--cache-dir", str(tmp_path / "cache"), "--inception-weights", weights,
            "--no-artifacts", *extra]


@functools.cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    return make_storage(url, heartbeat=None)


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(storage))


def wait_for_trial_of(storage: str, name: str, proc: subprocess.Popen, timeout: float = 300
                      ) -> int:
    """The number of a trial the worker `proc` is running now, once it has finished one."""
    pid = proc.pid
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        assert proc.poll() is None, f"worker {pid} exited with status {proc.returncode}"
        try:
            trials = load(storage, name).get_trials(deepcopy=False)
        except KeyError:
            continue
        mine = [t for t in trials if t.system_attrs.get(WORKER_ATTR, "").endswith(f":{pid}")]
        # past the budget check, so its images are being made
        running = [t for t in mine if t.state == TrialState.RUNNING and "avg_macs" in t.user_attrs]
        if running and any(t.state in FINISHED for t in mine):
            return running[0].number
    raise AssertionError(f"worker {pid} never ran a second trial")


def check_study(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """The total of searched candidates is exact (baselines run in addition), baselines appear
    once, no candidate was evaluated twice (to the end or to a rung)."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    assert TrialCounts.of(trials).searched == n_trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # no started trial left behind: a crashed worker's retry or an interrupted trial ran before
    # the sampler's queued children (those may wait for a longer run)
    assert not [t.number for t in trials
                if t.state == TrialState.WAITING and WORKER_ATTR in t.system_attrs]
    baselines = collections.Counter(t.user_attrs["baseline"] for t in trials
                                    if "baseline" in t.user_attrs and t.state != TrialState.FAIL)
    assert baselines and set(baselines.values()) == {1}, baselines
    marker = study._storage.get_study_system_attrs(study._study_id)[BASELINES_ATTR]
    # the enqueued ones, plus the sampler's seed (a baseline the space runs exactly, proposed
    # once like any candidate)
    assert set(marker) <= set(baselines)
    assert all(t.user_attrs.get("origin") == "seed" for t in trials
               if t.user_attrs.get("baseline") in set(baselines) - set(marker))
    evaluated = collections.Counter(
        t.user_attrs.get("baseline") or t.system_attrs[KEY_ATTR] for t in finished
        if (t.state == TrialState.COMPLETE or PRUNED_AT_ATTR in t.user_attrs)
        and "duplicate_of" not in t.user_attrs)
    assert set(evaluated.values()) == {1}, evaluated
    assert any("baseline" not in t.user_attrs for t in finished)  # searched candidates ran
    return finished


def test_three_workers_on_empty_postgres_one_killed(pg_url, model_dir, inception_weights,
                                                    tmp_path):
    n = 12  # with pruning: 8 images a candidate, the first 4 a rung
    cmd = worker_cmd(model_dir, tmp_path, inception_weights, pg_url, "w", n, "--heartbeat", "2",
                     "--num-images", "8", "--rungs", "4", "--pruner", "halving")
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    procs = []
    for i, log in enumerate(logs):  # all three at once, on a database without tables
        with open(log, "w") as out:
            procs.append(subprocess.Popen([*cmd, "--search-seed", str(i)], stdout=out,
                                          stderr=subprocess.STDOUT, env=ENV))
    try:
        killed = wait_for_trial_of(pg_url, "w", procs[0])
        procs[0].send_signal(signal.SIGKILL)
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [-signal.SIGKILL, 0, 0], texts
    study = load(pg_url, "w")
    finished = check_study(study, n)
    # the killed trial failed and its copy (same candidate) finished on another worker
    (failed,) = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert failed.number == killed
    (retry,) = [t for t in finished if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == failed.params
    assert retry.system_attrs.get(KEY_ATTR) == failed.system_attrs.get(KEY_ATTR)
    assert retry.user_attrs.get("baseline") == failed.user_attrs.get("baseline")
    # each worker counted its own trials, and together they ran exactly the total
    ran = [int(re.search(r"ran (\d+) trials this time", t).group(1)) for t in texts[1:]]
    by_killed = [t for t in finished if t.system_attrs[WORKER_ATTR].endswith(f":{procs[0].pid}")]
    assert sum(ran) + len(by_killed) == len(finished)
    assert any(PRUNED_AT_ATTR in t.user_attrs for t in finished)  # the pruner stopped some
    # the teacher was built by one worker while the others waited for it
    assert sum("teacher cache built" in t for t in texts) == 1
    assert sum("teacher cache reused" in t for t in texts) == 2
    assert all(PASSWORD not in t for t in texts) and "flexopt:***@127.0.0.1" in texts[1]
    assert study_names(pg_url) == ["w"]


def test_two_workers_through_the_grpc_proxy(pg_url, model_dir, inception_weights, tmp_path):
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "flexopt", "storage-proxy", "--storage", pg_url,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        url = f"grpc://127.0.0.1:{port}"
        cmd = worker_cmd(model_dir, tmp_path, inception_weights, url, "g", 8, "--workers", "2",
                         "--search-seed", "0")
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        finished = check_study(load(pg_url, "g"), 8)
        assert f"2 workers ran {len(finished)} trials this time" in r.stdout
        assert len(re.findall(r"worker \d: ran \d+ trials", r.stdout)) == 2
    finally:
        proxy.send_signal(signal.SIGINT)
        out, _ = proxy.communicate(timeout=60)
    assert "storage proxy for postgresql://flexopt:***@" in out and PASSWORD not in out
    assert "storage proxy stopped" in out and "Traceback" not in out


def test_ctrl_c_requeues_the_running_trial_and_a_rerun_evaluates_it(model_dir,
                                                                    inception_weights,
                                                                    tmp_path):
    storage = f"sqlite:///{tmp_path / 'i.db'}"
    # 9 searched candidates; the baselines (DeepCache, fewer-step teachers) run in addition
    cmd = worker_cmd(model_dir, tmp_path, inception_weights, storage, "i", 9)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    try:
        number = wait_for_trial_of(storage, "i", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.count("interrupted: the running trial is back in the queue") == 1
    assert load(storage, "i").trials[number].state == TrialState.WAITING
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "constraint value is ignored" not in r.stderr  # Optuna's warning on a second set
    study = load(storage, "i")
    assert study.trials[number].state in FINISHED  # the interrupted candidate, evaluated
    assert not study.get_trials(states=(TrialState.FAIL,))  # no gap: nothing failed or lost
    check_study(study, 9)
