"""docs/api.md's Python search runs as written, and its study is read by `flexopt export` and
`flexopt report` like one made by `flexopt search`."""

from __future__ import annotations

import shutil
from pathlib import Path

import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.metrics.weights import converted_path
from flexopt.search.study import TrialCounts
from flexopt.space.schedule import Schedule

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def example() -> str:
    lines = DOC.read_text().splitlines()
    start = lines.index("<!-- api-example -->") + 2  # skip the ```python fence
    return "\n".join(lines[start:lines.index("```", start)])


def test_api_example_runs_and_its_study_is_first_class(tmp_path, monkeypatch, inception_weights):
    code = example()
    assert len(code.splitlines()) <= 12  # "about ten lines"
    # the embedded model takes a minute on a busy CPU; a tiny one of the same kind, seconds
    assert code.count('"flexopt:fashion-mnist"') == 1
    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, in_channels=1, seed=0)),
                      tmp_path / "model")
    code = code.replace('"flexopt:fashion-mnist"', repr(str(model)))
    cache = tmp_path / "cache"
    converted_path(cache).parent.mkdir(parents=True)
    for src in (Path(inception_weights), Path(inception_weights).with_suffix(".json")):
        shutil.copy(src, converted_path(cache).parent)  # what a first run would convert
    monkeypatch.setenv("FLEXOPT_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    study = namespace["study"]
    assert TrialCounts.of_study(study).searched == 4  # the sampler's seed baselines on top
    best = Schedule.load(tmp_path / "best.json")
    assert best.t_ref == 10 and best.step_string() == study.best_trial.user_attrs["step_types"]
    r = CliRunner().invoke(main, ["export", "--storage", "sqlite:///api.db", "--best",
                                  "--out", "exported.json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", "--storage", "sqlite:///api.db", "--out", "r.html",
                                  "--no-artifacts", "--cdn"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.html").stat().st_size > 0
