"""User mistakes found by an adversarial review: each is one line and exit status 2, never a
traceback, and a mistake made once does not leave anything behind that blocks the corrected run."""

from __future__ import annotations

import sqlite3

import numpy as np
import optuna
import pytest
import tiny
import torch
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.metrics.frechet import frechet_distance
from flexopt.models.loading import parse_device
from flexopt.search.study import TrialCounts
from flexopt.space.schedule import Schedule


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, message):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and message in r.output, r.output


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim")


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    return Schedule.uniform(6, 2, 1).save(tmp_path_factory.mktemp("s") / "s.json")


# ------------------------------------------------------------------------------- devices
@pytest.mark.parametrize(
    "name, message",
    [
        ("bogus", "device 'bogus' is not supported; allowed: cpu, cuda, cuda:N, mps"),
        ("cuda:99", "device 'cuda:99' is not available"),
    ],
)
def test_parse_device_errors(name, message):
    with pytest.raises(FlexoptError, match=message.replace("(", r"\(")):
        parse_device(name)


def test_parse_device_defaults_and_cpu():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_one_line(model_dir, schedule, tmp_path):
    r = run("generate", model_dir, "--schedule", schedule, "--num-images", 2, "--out", tmp_path,
            "--device", "cuda")
    one_line_error(r, "device 'cuda' is not available")


# ------------------------------------------------------------------------------ files
def test_files_that_are_not_text(model_dir, tmp_path):
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x80" * 8)
    one_line_error(run("generate", model_dir, "--schedule", binary, "--num-images", 2,
                       "--out", tmp_path / "o"), "is not a text file")
    one_line_error(run("space", binary), "is not a text file")
    one_line_error(run("search", binary), "is not a text file")
    from flexopt.models.conditioning import parse_prompts

    with pytest.raises(FlexoptError, match="is not a UTF-8 text file"):
        parse_prompts((), str(binary))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(FlexoptError, match="holds no prompts"):
        parse_prompts((), str(empty))


def test_a_cache_dir_that_cannot_be_written(model_dir, schedule, tmp_path, inception_weights):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    r = run("rfid", model_dir, "--schedule", schedule, "--num-images", 2, "--device", "cpu",
            "--cache-dir", blocker / "cache", "--inception-weights", inception_weights)
    one_line_error(r, "cannot write into")


# ---------------------------------------------------------------------------- numbers
def test_sample_size_the_unet_cannot_halve():
    r = run("macs", "flexopt:fashion-mnist", "--sample-size", 30)
    one_line_error(r, "sample size 30 is invalid for this U-Net (4 down blocks); allowed: a "
                      "multiple of 8")
    assert run("macs", "flexopt:fashion-mnist", "--sample-size", 40).exit_code == 0


def test_huge_class_label_range_and_seed(model_dir, schedule, tmp_path):
    r = run("generate", model_dir, "--schedule", schedule, "--num-images", 2, "--out", tmp_path,
            "--class-labels", "0-99999999999")
    one_line_error(r, "class label 99999999999 is too large")
    r = run("generate", model_dir, "--schedule", schedule, "--num-images", 2, "--out", tmp_path,
            "--seed", 99999999999999999999)
    one_line_error(r, "--seed")


def test_frechet_distance_of_a_distribution_to_itself_is_zero_not_negative():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 64))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) >= 0.0


def test_help_no_longer_offers_options_without_effect():
    teacher = {p.name for p in main.commands["teacher"].params}
    assert "metric" not in teacher  # one teacher cache serves every metric
    r = run("generate", "m", "--schedule", "s.json", "--out", "o", "--num-images", 1,
            "--sampler", "bogus")
    assert r.exit_code == 2 and "'bogus' is not one of" in r.output


# ----------------------------------------------------------------------------- search
SPACE = ["--segments", "4", "--branches", "1", "--intervals", "1,2"]


def search_args(model_dir, tmp_path, weights, *extra):
    return ["search", "--model", model_dir, "--num-images", 4, "--batch-size", 4,
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study-name", "s", "--device", "cpu",
            "--cache-dir", tmp_path / "cache", "--inception-weights", weights, "--no-baselines",
            "--no-artifacts", "--search-seed", 0, *extra]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--t-ref", 2000, "--budget", "1.5x", *SPACE], "t_ref 2000 exceeds the model's 1000"),
        (["--t-ref", 8, "--segments", 600, "--branches", 1, "--intervals", "1,2", "--budget",
          "1.5x"], "the longest base grid, 600 segments x L=2 = 1200 steps, exceeds"),
        (["--t-ref", 8, *SPACE, "--budget", "3x"], "no candidate fits the budget"),
        (["--t-ref", 8, *SPACE, "--budget", "2.5"], "budget 2.5 means 2.5 avg MACs, far below"),
    ],
)
def test_search_refuses_before_making_a_study(model_dir, tmp_path, inception_weights, extra,
                                              message):
    r = run(*search_args(model_dir, tmp_path, inception_weights, *extra))
    one_line_error(r, message)
    assert "teacher cache" not in r.output
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert not (tmp_path / "s.db").exists() or optuna.get_all_study_names(storage) == []


def test_a_study_without_trials_takes_the_corrected_settings(model_dir, tmp_path,
                                                             inception_weights):
    from flexopt.run.budget import Budget
    from flexopt.search.config import EvolutionConfig
    from flexopt.search.study import SearchSettings, make_sampler, open_study
    from flexopt.space.segment import SearchSpace

    storage = f"sqlite:///{tmp_path / 's.db'}"
    space = SearchSpace([4], [1], [1, 2], 8)
    smp = make_sampler("random", space, lambda c: True, EvolutionConfig(), 0)
    # a run that stopped after making the study (e.g. killed while building its teacher)
    open_study(storage, "s", SearchSettings(space, budget=Budget.parse("3x")), smp)
    r = run(*search_args(model_dir, tmp_path, inception_weights, "--t-ref", 8, *SPACE,
                         "--budget", "1.5x", "--n-trials", 1))
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs["flexopt:settings"]["budget"]["speedup"] == 1.5
    assert TrialCounts.of_study(study).searched == 1


def test_the_config_seed_is_used(model_dir, tmp_path, inception_weights):
    config = tmp_path / "c.toml"
    config.write_text("t_ref = 8\n[space]\nsegments = [4]\nbranches = [1]\nintervals = [1, 2]\n"
                      "[rfid]\nseed = 7\n")
    args = search_args(model_dir, tmp_path, inception_weights, "--budget", "1.5x",
                       "--n-trials", 1)
    r = run(args[0], config, *args[1:])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert study.user_attrs["flexopt:settings"]["seed"] == 7
    assert "in all 1 searched candidates" in r.output
    # export without --study-name: the storage holds one study
    r = run("export", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--best", "--out",
            tmp_path / "best.json")
    assert r.exit_code == 0, r.output
    assert Schedule.load(tmp_path / "best.json").meta["study"] == "s"


def test_reading_a_sqlite_file_that_is_not_optuna_leaves_it_alone(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
    before = other.read_bytes()
    r = run("trials", "--storage", f"sqlite:///{other}")
    one_line_error(r, "is not an Optuna storage")
    assert other.read_bytes() == before
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    one_line_error(run("trials", "--storage", f"sqlite:///{empty}"), "is not an Optuna storage")
    assert empty.read_bytes() == b""
