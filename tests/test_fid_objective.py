"""`flexopt search --metric fid`: candidates scored by the standard FID against a data set (a
folder of images here) instead of rFID against the teacher."""

from __future__ import annotations

import re

import numpy as np
import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.metrics import FeatureStats
from flexopt.metrics.frechet import frechet_distance
from flexopt.search.config import StudyConfig
from flexopt.search.study import load_study
from flexopt.space.schedule import Schedule

SPACE = ["--segments", "auto", "--branches", "1,2", "--intervals", "1,2", "--t-ref", "20"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def searched(tmp_path_factory, inception_weights):
    root = tmp_path_factory.mktemp("fid-objective")
    model = str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), root / "m"))
    real = tiny.image_folder(root / "real", 10)
    common = ["--device", "cpu", "--cache-dir", str(root / "cache"), "--inception-weights",
              inception_weights]
    search = ["search", "--model", model, "--budget", "2x", *SPACE, "--num-images", 6,
              "--batch-size", 6, "--storage", f"sqlite:///{root / 'study.db'}", "--study-name",
              "f", "--search-seed", 0, "--baselines", "best", "--no-artifacts", "--pruner",
              "none", *common]
    r = run(*search, "--n-trials", 4, "--metric", "fid", "--reference", real)
    assert r.exit_code == 0, r.output
    return root, model, real, common, search, r.output


def test_each_trial_scores_the_fid_of_its_schedule_against_the_data(searched, tmp_path):
    """A trial's value is what `flexopt fid` gives its exported schedule on the same seeds
    against the same images, for searched candidates and baselines alike (not its rFID)."""
    root, model, real, common, _, output = searched
    assert re.search(r"^objective: fid against .*real test, all \(10 images; reference "
                     r"statistics built\)$", output, re.M), output
    storage = f"sqlite:///{root / 'study.db'}"
    study = load_study(storage, "f")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    searched_trial = next(t for t in done if "baseline" not in t.user_attrs)
    baseline = next(t for t in done if "baseline" in t.user_attrs)
    for trial in (searched_trial, baseline):
        path = tmp_path / f"t{trial.number}.json"
        r = run("export", "--storage", storage, "--study-name", "f", "--trial", trial.number,
                "--out", path)
        assert r.exit_code == 0, r.output
        r = run("fid", model, "--schedule", path, "--reference", real, "--num-images", 6,
                "--seed", 0, "--batch-size", 6, *common)
        assert r.exit_code == 0, r.output
        assert "reference statistics reused" in r.output  # the search's, not built again
        fid = float(re.search(r"\bfid: (\S+)$", r.output, re.M).group(1))
        assert trial.value == pytest.approx(fid, abs=1e-3)
        rfid = run("rfid", model, "--schedule", path, "--num-images", 6, "--seed", 0,
                   "--batch-size", 6, *common)
        assert float(re.search(r"^rfid: (\S+)$", rfid.output, re.M).group(1)) != pytest.approx(
            trial.value, abs=1e-3)


def test_the_report_names_the_objective_and_its_data(searched, tmp_path):
    root, *_ = searched
    html = tmp_path / "r.html"
    r = run("report", "--storage", f"sqlite:///{root / 'study.db'}", "--out", html,
            "--no-artifacts")
    assert r.exit_code == 0, r.output
    text = html.read_text()
    assert "FID vs data (6 images; against " in text and "real test, all)" in text


def test_resuming_against_other_data_or_the_teacher_is_refused(searched, tmp_path):
    *_, search, _ = searched
    other = tiny.image_folder(tmp_path / "other", 10)
    r = run(*search, "--n-trials", 4, "--metric", "fid", "--reference", other)
    assert r.exit_code == 2 and "created with other settings" in r.output
    assert "reference" in r.output and "other test, all" in r.output
    r = run(*search, "--n-trials", 4)  # rfid now
    assert r.exit_code == 2 and "metric: stored 'fid', given 'rfid'" in r.output


@pytest.mark.parametrize("args, message", [
    (["--metric", "fid"], "metric 'fid' scores candidates against a data set: give --reference"),
    (["--reference", "fashion-mnist"], "metric 'rfid' scores candidates against the teacher"),
    (["--metric", "fld"], "'fld' is not one of 'rfid', 'kid', 'paired', 'fid'"),
    (["--reference-split", "train"], "--reference-split train was given without a reference"),
    (["--reference-images", "500"], "--reference-images 500 was given without a reference"),
    (["--metric", "fid", "--reference", "no-such-folder"],
     "data 'no-such-folder' is neither a known data set"),
])
def test_metric_and_reference_mistakes_are_one_line(tmp_path, args, message):
    """Refused before any model loads (the model path does not even exist)."""
    r = run("search", "--model", tmp_path / "nowhere", "--budget", "2x", *SPACE,
            "--storage", f"sqlite:///{tmp_path / 's.db'}", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_a_missing_data_set_is_refused_before_any_work(tmp_path, monkeypatch):
    """Not after the teacher's statistics were built (minutes): the model path does not exist."""
    import flexopt.models.data

    monkeypatch.setattr(flexopt.models.data, "FASHION_MNIST_DIR", tmp_path / "no-datasets")
    r = run("search", "--model", tmp_path / "nowhere", "--budget", "2x", *SPACE,
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--metric", "fid",
            "--reference", "fashion-mnist", "--reference-split", "train")
    assert r.exit_code == 2, r.output
    assert "Fashion-MNIST not found at" in r.output and "train-images" in r.output
    assert "apt-get install dataset-fashion-mnist" in r.output and "Traceback" not in r.output


def test_the_config_names_the_metric_and_its_reference(tmp_path):
    base = {"model": "m", "space": {"segments": [3], "branches": [1], "intervals": [1]}}
    cfg = StudyConfig.from_dict({**base, "rfid": {"metric": "fid", "reference": "real",
                                                  "reference_images": 500}},
                                source=str(tmp_path / "study.toml"))
    assert (cfg.metric, cfg.reference, cfg.reference_images) == (
        "fid", str(tmp_path / "real"), 500)  # a folder: relative to the config file
    cfg = StudyConfig.from_dict({**base, "rfid": {"metric": "fid", "reference": "fashion-mnist",
                                                  "reference_split": "train"}})
    assert (cfg.reference, cfg.reference_split) == ("fashion-mnist", "train")
    for rfid, message in (({"metric": "fld"}, "rfid.metric 'fld' is invalid; allowed: rfid"),
                          ({"reference_split": "val"}, "allowed: train, test"),
                          ({"reference_images": 1}, "rfid.reference_images 1 is invalid")):
        with pytest.raises(Exception, match=re.escape(message)):
            StudyConfig.from_dict({**base, "rfid": rfid})


def test_rungs_score_the_first_images_against_the_whole_data_set(searched):
    """At a rung the first n images are compared with all the reference images (FID has no
    teacher images to cut to n), by the plain float64 formula on the two Gaussians."""
    from flexopt.models.loading import open_pipeline
    from flexopt.search.evaluator import EvalSettings, ModelEvaluator

    root, model, real, common, _, _ = searched
    settings = EvalSettings(6, 0, 6, "fid", reference=str(real))
    ev = ModelEvaluator(open_pipeline(model, "cpu", "float32"), "ddim", 20, settings,
                        str(root / "cache"), common[-1], progress=False)
    schedule = Schedule.full(10)
    seen: dict[int, float] = {}
    value = ev.score(schedule, rungs=(3,), on_rung=lambda n, v: seen.setdefault(n, v))
    ref = ev.reference().stats
    # the images in the same pieces as the search makes them (batches split at the rung)
    feats = np.concatenate([ev.features(ev.images(schedule, start=a, stop=b).images)
                            for a, b in ((0, 3), (3, 6))])
    for n, got in ((3, seen[3]), (6, value)):
        part = FeatureStats.from_features(feats[:n])
        assert got == pytest.approx(frechet_distance(ref.mu, ref.sigma, part.mu, part.sigma),
                                    rel=1e-4)
    assert np.isfinite(value)
