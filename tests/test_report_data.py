"""Report data from a study: rows, Pareto front, progress, tables; plus the shared study fixture.

`build_study` runs a small search through `flexopt.search` on a synthetic evaluator that also makes
images (the teacher's, and per candidate the teacher's degraded by its score, from the same
"noises"), uploading sample grids the way the search's objective hook does. The other report
tests import it from here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from flexopt.errors import FlexoptError
from flexopt.report.data import collect, hypervolume, pareto_indices, trials_frame
from flexopt.run.budget import Budget
from flexopt.search import baselines as fb
from flexopt.search import objective as fo
from flexopt.search import study as fs
from flexopt.search.artifacts import SampleGridUploader
from flexopt.search.config import EvolutionConfig
from flexopt.search.loop import optimize
from flexopt.search.study import feasible_trials, load_study
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import StepType

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), t_ref=20)


class ImagingEvaluator:
    """Full step costs 1, partial 0.1·branch. Score: weighted error of skipped/partial slots
    (later slots weigh more) plus a penalty for a short grid; images degrade with the score."""

    full_macs = 1.0

    def __init__(self, n_images: int = 6, size: int = 24):
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:size, 0:size] / size
        imgs = []
        for _ in range(n_images):
            a, b, c = rng.uniform(0, 6, size=3)
            imgs.append(np.stack([np.sin(a * xx + b * yy + c), np.cos(b * xx - a * yy),
                                  np.sin(c * xx * yy + a)]))
        self.teacher_images = ((np.stack(imgs) + 1) * 127.5).astype(np.uint8)
        self.last_images: np.ndarray | None = None

    def avg_macs(self, s: Schedule) -> float:
        return sum(1 + (seg.interval - 1) * 0.1 * seg.branch for seg in s.segments) / s.t_ref

    def score(self, s: Schedule) -> float:
        types, branches, n = s.step_types(), s.slot_branches(), s.grid_length
        err = 0.0
        for j, (t, b) in enumerate(zip(types, branches, strict=True)):
            e = 0.6 if t is StepType.NULL else (0.3 / b if t is StepType.PARTIAL else 0.0)
            err += (0.5 + j / n) * e
        value = 10 * err / n + 12 * max(0.0, 1 - n / s.t_ref) ** 2
        rng = np.random.default_rng(zlib.crc32(s.step_string().encode()))
        noise = rng.normal(0, 25 * value, self.teacher_images.shape)
        self.last_images = np.clip(self.teacher_images + noise, 0, 255).astype(np.uint8)
        return value


@dataclass(frozen=True)
class BuiltStudy:
    storage: str
    name: str
    artifacts: Path
    evaluator: Any


def build_study(
    root: Path, *, multi: bool = False, n_trials: int = 30, grids: bool = True, name: str = "demo",
    evaluator: Any = None, space: SearchSpace = SPACE, budget: str = "0.3",
) -> BuiltStudy:
    """A finished small search with baselines: `root/study.db`, grids in `root/study-artifacts`.

    `evaluator` (default `ImagingEvaluator`) needs `teacher_images` and `last_images` besides
    the `ScheduleEvaluator` protocol; `model` in the settings is its class name.
    """
    ev = evaluator if evaluator is not None else ImagingEvaluator()
    b = Budget.parse(budget)
    limit = b.max_avg_macs(ev.full_macs)
    settings = fs.SearchSettings(space, "ddim", b, multi, "rfid", type(ev).__name__, 6, 0)
    evo = EvolutionConfig(population=8, n_p=4, n_c=3, n_u=30)
    sampler = fs.make_sampler("evo", space, fo.feasibility(space, "ddim", ev, limit), evo, 0)
    storage = f"sqlite:///{root / 'study.db'}"
    # Searched in memory, then copied: a SQLite commit per attribute would take seconds.
    study = fs.open_study(optuna.storages.InMemoryStorage(), name, settings, sampler)
    baselines = fb.baseline_schedules(space, "ddim", ev.full_macs, ev.avg_macs, limit, mode="all")
    fb.enqueue_baselines(study, baselines)
    objective = fo.Objective(space, ev, "ddim", limit, multi)
    uploader = SampleGridUploader.for_storage(storage) if grids else None

    def with_grids(trial: optuna.Trial):  # what the one-line hook in Objective does
        ev.last_images = None
        value = objective(trial)
        if uploader is not None:
            uploader(trial, ev.last_images)
        return value

    if uploader is not None:
        uploader.teacher(study, ev.teacher_images)
    optimize(study, with_grids, n_trials=n_trials)
    optuna.copy_study(from_study_name=name, from_storage=study._storage, to_storage=storage)
    return BuiltStudy(storage, name, root / "study-artifacts", ev)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> BuiltStudy:
    return build_study(tmp_path_factory.mktemp("report-data"))


def test_rows_front_and_best(built):
    report = collect(load_study(built.storage, None))
    kinds = {r.kind for r in report.rows}
    assert {"searched", "deepcache", "teacher"} <= kinds
    assert any(r.state == "PRUNED" and r.rfid is None for r in report.rows) or all(
        r.state == "COMPLETE" for r in report.rows
    )
    front = [report.row(n) for n in report.pareto]
    assert front and all(r.feasible for r in front)  # baselines under the budget count too
    macs = [r.avg_macs for r in front]
    rfid = [r.rfid for r in front]
    assert macs == sorted(macs) and rfid == sorted(rfid, reverse=True)
    feasible = [r for r in report.evaluated if r.feasible]
    assert report.best_searched == min((r for r in feasible if r.kind == "searched"),
                                       key=lambda r: r.rfid).number
    # the report's best is what `export --best` picks: baselines included
    study = load_study(built.storage, None)
    assert report.best == feasible_trials(study)[0].number
    assert report.best in report.pareto
    assert report.max_avg_macs == pytest.approx(0.3) and report.full_macs == pytest.approx(1.0)
    over = [r for r in report.rows if r.kind == "deepcache" and not r.feasible]
    assert over and all(r.rfid is not None for r in over)  # evaluated, but over budget
    dc = next(r for r in report.rows if r.label == "deepcache n=5 b=3")
    assert dc.segments == "3/5×4" and dc.steps == "FPPPP|FPPPP|FPPPP|FPPPP"


def test_progress_is_monotone(built):
    points = collect(load_study(built.storage, "demo")).progress()
    values = [p.value for p in points]
    assert values == sorted(values, reverse=True)
    assert all(b.elapsed_s >= 0 for b in points)


def test_multi_objective_progress_is_hypervolume(tmp_path):
    b = build_study(tmp_path, multi=True, n_trials=20, grids=False)
    report = collect(load_study(b.storage, "demo"))
    assert report.multi_objective
    values = [p.value for p in report.progress()]
    assert values == sorted(values) and 0 < values[-1] <= 1


def test_pareto_and_hypervolume_helpers():
    pts = [(1, 5), (2, 3), (2, 4), (3, 3), (4, 1)]
    assert pareto_indices(pts) == [0, 1, 4]
    assert hypervolume([(1, 1)], (2, 2)) == 1
    assert hypervolume([(1, 2), (2, 1)], (3, 3)) == 3
    assert hypervolume([(5, 5)], (3, 3)) == 0


def test_trials_frame_columns(built):
    report = collect(load_study(built.storage, "demo"), highlight=[0])
    frame = trials_frame(report, report.pareto)
    assert list(frame["trial"]) == report.pareto
    assert {"avg_macs", "nfe", "speedup", "rfid", "steps"} <= set(frame.columns)
    assert report.chosen == [0] and 0 in report.selected()


def test_user_mistakes(built, tmp_path):
    with pytest.raises(FlexoptError, match="does not exist"):
        load_study(f"sqlite:///{tmp_path / 'nope.db'}", "demo")
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(FlexoptError, match=r"study 'dmeo' is not in .*studies there: demo"):
        load_study(built.storage, "dmeo")
    with pytest.raises(FlexoptError, match="cannot be opened"):
        load_study("postgresql+nodriver://u@127.0.0.1:1/x", "demo")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=empty, study_name="e").set_user_attr("flexopt:settings", {})
    with pytest.raises(FlexoptError, match="no finished trials"):
        collect(load_study(empty, "e"))
    with pytest.raises(FlexoptError, match="--highlight 999: no such finished trial"):
        collect(load_study(built.storage, "demo"), highlight=[999])
