"""Issue 27: the latency profile (measured in the pipeline, cached, keyed) and `--cost latency`.

No timing assertions: the profile's arithmetic is checked on a fake clock that advances by known
amounts per U-Net call and per pipeline call, so the decomposition must return them exactly."""

from __future__ import annotations

import json

import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.metrics.latency import latency_profile, profile_path
from flexopt.run import latency as latency_mod
from flexopt.run.budget import Budget
from flexopt.run.cost import schedule_cost
from flexopt.run.executor import UNetExecutor
from flexopt.run.latency import LatencyProfile, measure_latency, predict_seconds
from flexopt.run.scheduler import FlexScheduler
from flexopt.search.study import LATENCY_ATTR
from flexopt.space.schedule import Schedule
from flexopt.space.steps import StepType


@pytest.fixture(scope="module")
def pipe():
    return tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, pipe):
    return str(tiny.save(pipe, tmp_path_factory.mktemp("model") / "ddim"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ------------------------------------------------------------------------ budget and profile
def test_budget_seconds_and_units():
    assert Budget.parse("1.5s").seconds == 1.5 and Budget.parse("800ms").seconds == 0.8
    assert str(Budget.parse("800ms")) == "0.8s"
    with pytest.raises(FlexoptError, match="wall-clock seconds, but the cost is MACs"):
        Budget.parse("2s").max_avg_macs(1e9)
    with pytest.raises(FlexoptError, match="is in MACs, but the cost is latency"):
        Budget.parse("3G").check_unit("latency")
    with pytest.raises(FlexoptError, match="is invalid"):
        Budget.parse("2 sec")


def test_ceiling_counts_the_fixed_part_on_both_sides():
    p = LatencyProfile(full=0.1, partial=(0.01, 0.03), fixed=0.5, batch_size=8)
    t_ref = 20  # teacher: 0.5 + 20 * 0.1 = 2.5 s
    avg = p.ceiling(Budget.parse("2x"), t_ref)
    assert p.seconds(avg * t_ref) == pytest.approx(2.5 / 2)
    assert p.speedup(avg, t_ref) == pytest.approx(2.0)
    assert p.ceiling(Budget.parse("1.5s"), t_ref) == pytest.approx((1.5 - 0.5) / t_ref)
    with pytest.raises(FlexoptError, match="leaves no time for the steps"):
        p.ceiling(Budget.parse("400ms"), t_ref)
    # the schedule's seconds: fixed + its full and partial steps (null steps cost nothing)
    s = Schedule.uniform(20, 4, 2)  # 5 full + 15 partial b=2
    assert predict_seconds(p, s) == pytest.approx(0.5 + 5 * 0.1 + 15 * 0.03)
    assert schedule_cost(s, p).speedup == pytest.approx(2.5 / (0.5 + 0.5 + 0.45))
    with pytest.raises(FlexoptError, match="branch 3 is not in the latency profile"):
        p.partial_cost(3)


def test_profile_json_round_trip_and_corrupt():
    p = LatencyProfile(0.1, (0.01, 0.02), 0.3, 4, (1, 3), 5, {"full": 0.1}, {"a": 1})
    assert LatencyProfile.from_json(json.loads(json.dumps(p.to_json()))) == p
    for bad in ({}, {"format": "x"}, {**p.to_json(), "full": -1.0}, {**p.to_json(), "partial": []}):
        with pytest.raises((ValueError, KeyError)):
            LatencyProfile.from_json(bad)


class FakeClock:
    """`time.perf_counter` advancing only where the test says: a U-Net call costs `full` or
    `partial[b]`, a pipeline call (`set_timesteps`) costs `fixed`."""

    def __init__(self, monkeypatch, full=10.0, partial=(1.0, 2.0, 4.0), fixed=5.0):
        self.now = 0.0
        clock = self
        real_call, real_set = UNetExecutor.__call__, FlexScheduler.set_timesteps

        def call(self_, sample, timestep, kind, branch=None, **kw):
            if sample.device.type != "meta":  # not the MACs count's weightless copy
                clock.now += full if kind == StepType.FULL else partial[branch - 1]
            return real_call(self_, sample, timestep, kind, branch=branch, **kw)

        def set_timesteps(self_, *a, **kw):
            clock.now += fixed
            return real_set(self_, *a, **kw)

        monkeypatch.setattr(UNetExecutor, "__call__", call)
        monkeypatch.setattr(FlexScheduler, "set_timesteps", set_timesteps)
        monkeypatch.setattr(latency_mod, "perf_counter", lambda: clock.now)


def test_measure_recovers_the_costs_exactly(pipe, monkeypatch):
    FakeClock(monkeypatch)
    p = measure_latency(pipe, batch_size=2, rounds=2, warmup=1, branches=(1, 3))
    assert p.full == 10.0 and p.partial == (1.0, 4.0) and p.fixed == 5.0
    assert p.branches == (1, 3) and p.rounds == 2 and p.spread["full"] == 0.0
    assert p.key["batch_size"] == 2 and p.key["branches"] == [1, 3]
    assert predict_seconds(p, Schedule.uniform(10, 2, 3)) == 5.0 + 5 * 10.0 + 5 * 4.0


def test_measure_bad_branch(pipe):
    with pytest.raises(FlexoptError, match="branch 99 is beyond"):
        measure_latency(pipe, batch_size=1, rounds=1, warmup=0, branches=(99,))


# ----------------------------------------------------------------------------------- cache
def test_cache_keying_refresh_and_corrupt(pipe, tmp_path, monkeypatch):
    FakeClock(monkeypatch)
    kw = {"batch_size": 2, "cache": str(tmp_path), "rounds": 1, "warmup": 0, "branches": (1,)}
    first = latency_profile(pipe, **kw)
    assert first.source == "measured" and first.path.exists()
    again = latency_profile(pipe, **kw)
    assert again.source == "cache" and again.profile == first.profile
    # everything the time depends on is in the key: another batch is another file
    other = latency_profile(pipe, **{**kw, "batch_size": 3})
    assert other.source == "measured" and other.path != first.path
    assert latency_profile(pipe, **kw, refresh=True).source == "measured"
    first.path.write_text("{not json")
    with pytest.warns(UserWarning, match="is corrupt"):
        rebuilt = latency_profile(pipe, **kw)
    assert rebuilt.source == "measured" and json.loads(first.path.read_text())["full"] == 10.0
    # a file whose key is not this run's (a hand-copied profile) is measured again
    data = json.loads(first.path.read_text())
    data["key"]["threads"] = 999
    first.path.write_text(json.dumps(data))
    assert latency_profile(pipe, **kw).source == "measured"
    assert profile_path(first.profile.key, str(tmp_path)) == first.path


def test_profile_cli(model_dir, tmp_path, monkeypatch):
    FakeClock(monkeypatch)
    args = ["profile", model_dir, "--device", "cpu", "--batch-size", 2, "--rounds", 1,
            "--warmup", 0, "--branches", "1,2", "--cache-dir", tmp_path]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "measured" in r.output and "partial b=2" in r.output and "10000.00 ms" in r.output
    r = run(*args, "--json")
    data = json.loads(r.stdout)
    assert data["source"] == "cache" and data["partial"] == [1.0, 2.0] and data["fixed"] == 5.0
    r = run("profile", model_dir, "--device", "cpu", "--branches", "0", "--cache-dir", tmp_path)
    assert r.exit_code == 2 and "Error: --branches choice 0 is below 1" in r.output


# ------------------------------------------------------------------- a latency-budget search
def search_args(model_dir, tmp_path, weights, *extra):
    return ["search", "--model", model_dir, "--segments", "4,5", "--branches", "1,2",
            "--intervals", "1,2,3,4", "--t-ref", "20", "--num-images", 4, "--batch-size", 4,
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study-name", "lat", "--device",
            "cpu", "--cache-dir", tmp_path / "cache", "--inception-weights", weights,
            "--baselines", "best", "--search-seed", 0, *extra]


@pytest.fixture(scope="module")
def latency_study(model_dir, tmp_path_factory, inception_weights):
    """A `--cost latency --budget 2x` study on the fake clock (full 10, partial 1/2/4, fixed 5
    per call): (its directory, the search's output)."""
    tmp = tmp_path_factory.mktemp("latency-study")
    with pytest.MonkeyPatch.context() as mp:
        FakeClock(mp)
        r = run(*search_args(model_dir, tmp, inception_weights, "--cost", "latency",
                             "--budget", "2x", "--n-trials", 6))
    assert r.exit_code == 0, r.output
    return tmp, r.output


def test_latency_budget_search(latency_study, model_dir, inception_weights):
    tmp, output = latency_study
    assert "latency profile (batch 4" in output and "faster than the teacher" in output
    assert "x predicted (" in output and "s measured)" in output  # the summary's wall-clock
    assert "prefix reuse: off" in output
    study = optuna.load_study(study_name="lat", storage=f"sqlite:///{tmp / 's.db'}")
    assert study.user_attrs[LATENCY_ATTR]["full"] == 10.0
    searched = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                and "baseline" not in t.user_attrs and "duplicate_of" not in t.user_attrs]
    assert len(searched) >= 1
    teacher = 5.0 + 20 * 10.0
    for t in searched:  # under the budget in predicted wall-clock, not MACs
        assert t.user_attrs["predicted_seconds"] < teacher / 2
        assert t.user_attrs["predicted_speedup"] > 2
        assert t.user_attrs["measured_seconds"] > 0  # its generation, scaled to a batch
        assert t.user_attrs["avg_macs"] > 0  # MACs are still recorded
    # resuming the study with another cost is refused, as any other setting
    r = run(*search_args(model_dir, tmp, inception_weights, "--budget", "2x", "--n-trials", 6))
    assert r.exit_code == 2 and "cost" in r.output and "other settings" in r.output


def test_report_shows_the_wall_clock_view(latency_study):
    tmp, _ = latency_study
    out = tmp / "report.html"
    r = run("report", "--storage", f"sqlite:///{tmp / 's.db'}", "--out", out, "--no-artifacts")
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "Wall-clock (latency budget)" in page and "seconds per batch, measured" in page
    assert "102 s per batch (latency profile)" in page  # (5 + 20 * 10) / 2 = 102.5
    from flexopt.report.data import collect

    report = collect(optuna.load_study(study_name="lat", storage=f"sqlite:///{tmp / 's.db'}"))
    assert report.max_avg_macs is None and report.max_batch_seconds == pytest.approx(102.5)
    assert report.timed and all(r.predicted_seconds for r in report.timed)


def test_validate_times_a_latency_study(latency_study, inception_weights):
    tmp, _ = latency_study
    out = tmp / "validation.json"
    r = run("validate", "--storage", f"sqlite:///{tmp / 's.db'}", "--num-images", 4,
            "--batch-size", 4, "--seed", 1000, "--device", "cpu", "--cache-dir", tmp / "cache",
            "--inception-weights", inception_weights, "--json", out)
    assert r.exit_code == 0, r.output
    assert "pred s" in r.output and "meas s" in r.output and "wall" in r.output
    rows = json.loads(out.read_text())["rows"]
    teacher = next(row for row in rows if row["kind"] == "teacher")
    assert teacher["predicted_seconds"] == pytest.approx(205.0)  # the study's profile
    assert all(row["measured_seconds"] > 0 for row in rows)


def test_space_with_latency_cost(model_dir, tmp_path, monkeypatch):
    FakeClock(monkeypatch)
    monkeypatch.setenv("FLEXOPT_CACHE_DIR", str(tmp_path))
    args = ["space", "--model", model_dir, "--segments", "4,5", "--branches", "1,2",
            "--intervals", "1,2,3,4", "--t-ref", 20, "--budget", "2x", "--cost", "latency",
            "--batch-size", 2, "--device", "cpu"]
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    budget = json.loads(r.stdout)["budget"]
    assert budget["cost"] == "latency"
    assert budget["max_avg_seconds"] == pytest.approx((205 / 2 - 5) / 20)
    r = run(*args)
    assert "under 4.88e+03 ms avg per step (2x, latency profile)" in r.output, r.output
    r = run(*args[:-6], "--budget", "3G", "--cost", "latency")
    assert r.exit_code == 2 and "is in MACs, but the cost is latency" in r.output


@pytest.mark.parametrize("extra, message", [
    (("--cost", "latency", "--budget", "3G"), "budget 3.00G is in MACs, but the cost is latency"),
    (("--budget", "1.5s"), "budget 1.5s is wall-clock seconds, but the cost is MACs"),
    (("--cost", "wallclock", "--budget", "2x"), "Invalid value for '--cost'"),
])
def test_search_bad_cost_values(model_dir, tmp_path, inception_weights, extra, message):
    r = run(*search_args(model_dir, tmp_path, inception_weights, *extra, "--n-trials", 2))
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output


def test_config_cost_key(tmp_path):
    from flexopt.search.config import StudyConfig

    cfg = StudyConfig.from_dict({"cost": "latency", "budget": "3x",
                                 "space": {"segments": [4], "branches": [1], "intervals": [1]}})
    assert cfg.cost == "latency"
    with pytest.raises(FlexoptError, match="cost 'time' is invalid; allowed: macs, latency"):
        StudyConfig.from_dict({"cost": "time", "space": {"segments": [4], "branches": [1],
                                                         "intervals": [1]}})
    with pytest.raises(FlexoptError, match="in MACs, but the cost is latency"):
        StudyConfig.from_dict({"cost": "latency", "budget": "3G", "space": {
            "segments": [4], "branches": [1], "intervals": [1]}})


def test_call_kinds_of_a_late_start_and_a_split_batch(pipe):
    """img2img runs the schedule's last calls, the first of them full; a run that made a
    multiple of the calls was split (out of memory): one clear line, not a wrong diagnosis."""
    s = Schedule.uniform(10, 2, 3)  # F P F P ...
    assert latency_mod._kinds(pipe, s, 10, 4) == ["full", "partial_3"] * 5
    assert latency_mod._kinds(pipe, s, 7, 4) == ["full", "full", "partial_3", "full",
                                                  "partial_3", "full", "partial_3"]
    with pytest.raises(FlexoptError, match="a batch of 4 does not fit on the device"):
        latency_mod._kinds(pipe, s, 20, 4)
    with pytest.raises(FlexoptError, match="made 13 U-Net calls for a schedule of 10"):
        latency_mod._kinds(pipe, s, 13, 4)


def test_timestep_profile_has_no_partial_steps(pipe, tmp_path, monkeypatch):
    FakeClock(monkeypatch)
    got = latency_profile(pipe, batch_size=2, cache=str(tmp_path), rounds=1, warmup=0,
                          branches=())
    assert got.profile.partial == () and got.profile.max_branch == 0
    assert latency_profile(pipe, batch_size=2, cache=str(tmp_path), rounds=1, warmup=0,
                           branches=()).source == "cache"  # read back, not "corrupt"


def test_fitting_takes_the_costliest_branch_as_the_heaviest():
    from flexopt.run.fitting import cost_range
    from flexopt.space.segment import SearchSpace

    p = LatencyProfile(full=1.0, partial=(0.5, 0.1), fixed=0.0, batch_size=1)  # b=1 costlier
    space = SearchSpace((2,), (1, 2), (1, 2), 4)
    assert cost_range(space, p).heaviest == pytest.approx(2 * (1.0 + 0.5) / 4)
    assert Budget.parse("800MS").seconds == 0.8 and Budget.parse("1.5S").seconds == 1.5
