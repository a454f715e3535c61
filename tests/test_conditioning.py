"""Conditioning from the CLI and from study configs: class labels (class-conditional U-Nets) and
prompts (text pipelines), checked against the model, and recorded on a study."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.models.conditioning import parse_class_labels
from flexopt.models.loading import load_pipeline
from flexopt.run.pipeline import apply_schedule
from flexopt.search.config import StudyConfig
from flexopt.search.evaluator import EvalSettings
from flexopt.search.study import TrialCounts
from flexopt.space.schedule import Schedule


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ()),
        ("3", (3,)),
        ("0-3", (0, 1, 2, 3)),
        ("5, 1,0-1", (5, 1, 0, 1)),  # order kept: labels are cycled over images in this order
        (7, (7,)),
        ([2, 0, 9], (2, 0, 9)),
    ],
)
def test_parse_class_labels(value, expected):
    assert parse_class_labels(value) == expected


@pytest.mark.parametrize("value", ["a", "3-1", "-2", "1,,2", "1.5", [1, -1], [True], True])
def test_parse_class_labels_errors(value):
    with pytest.raises(FlexoptError, match=r"class labels .* invalid"):
        parse_class_labels(value)


SPACE = """
[space]
segments = [4]
branches = [1]
intervals = [1, 2]
"""


def test_config_conditioning_keys(tmp_path):
    d = tmp_path / "studies"
    d.mkdir()
    p = d / "c.toml"
    p.write_text(SPACE + '[rfid]\nprompt_file = "prompts/parti.txt"\nguidance_scale = 5\n'
                 'class_labels = "0-2,7"\n')
    cfg = StudyConfig.load(p)
    assert cfg.prompt_file == str(d / "prompts" / "parti.txt")  # relative to the config file
    assert cfg.guidance_scale == 5.0 and cfg.class_labels == (0, 1, 2, 7)
    p.write_text(SPACE + "[rfid]\nclass_labels = [4, 1]\n")
    assert StudyConfig.load(p).class_labels == (4, 1)
    for bad, message in [("guidance_scale = -1", "rfid.guidance_scale -1 is invalid"),
                         ("prompt_file = 3", "rfid.prompt_file 3 is invalid"),
                         ('class_labels = "x"', "class labels 'x' are invalid"),
                         ("prompts = 1", "unknown key(s) prompts")]:
        p.write_text(SPACE + f"[rfid]\n{bad}\n")
        with pytest.raises(FlexoptError) as err:
            StudyConfig.load(p)
        assert message in str(err.value)


def test_conditioning_digest():
    assert EvalSettings(4).conditioning() is None
    a = EvalSettings(4, prompts=("a cat", "a dog")).conditioning()
    assert a.startswith("2 prompts sha256:") and a.endswith("guidance 7.5")
    assert a != EvalSettings(4, prompts=("a cat", "a cow")).conditioning()
    assert a != EvalSettings(4, prompts=("a cat", "a dog"), guidance_scale=3).conditioning()
    assert EvalSettings(4, class_labels=(1, 2)).conditioning() != EvalSettings(
        4, class_labels=(2, 1)).conditioning()


# ------------------------------------------------------------------ class-conditional models
@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    unet = tiny.unet2d(sample_size=16, num_class_embeds=10, seed=0)
    return tiny.save(tiny.ddim_pipeline(unet), tmp_path_factory.mktemp("cls") / "pipe")


@pytest.fixture(scope="module")
def schedule_file(tmp_path_factory):
    return Schedule.uniform(6, 2, 1).save(tmp_path_factory.mktemp("s") / "s.json")


def test_generate_with_class_labels_equals_the_python_api(class_dir, schedule_file, tmp_path):
    r = run("generate", class_dir, "--schedule", schedule_file, "--num-images", 3, "--seed", 5,
            "--class-labels", "7,2", "--out", tmp_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    run_ = apply_schedule(load_pipeline(str(class_dir)), Schedule.load(schedule_file))
    gens = [torch.Generator().manual_seed(5 + i) for i in range(3)]
    expected = run_(batch_size=3, generator=gens, output_type="np", progress=False,
                    class_labels=torch.tensor([7, 2, 7])).images
    got = np.load(tmp_path / "images.npz")["images"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # the labels matter: other labels, other images
    other = run_(batch_size=3, generator=[torch.Generator().manual_seed(5 + i) for i in range(3)],
                 output_type="np", progress=False, class_labels=torch.tensor([1, 1, 1])).images
    assert np.abs(got - other).max() > 1e-3


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "this model is class-conditional: give class labels (e.g. 0-9) with --class-labels"),
        (["--class-labels", "3,10"], "class label 10 is beyond this model; allowed: 0..9"),
        (["--class-labels", "3-"], "class labels '3-' are invalid at '3-'"),
        (["--prompt", "a cat"], "prompts were given, but DDIMPipeline is not a text-to-image"),
    ],
)
def test_class_conditional_errors(class_dir, schedule_file, tmp_path, extra, message):
    r = run("generate", class_dir, "--schedule", schedule_file, "--num-images", 2,
            "--out", tmp_path, "--device", "cpu", *extra)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_labels_for_an_unconditional_model_are_refused(schedule_file, tmp_path):
    d = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16)), tmp_path / "plain")
    r = run("generate", d, "--schedule", schedule_file, "--num-images", 2,
            "--class-labels", "1", "--out", tmp_path / "o", "--device", "cpu")
    assert r.exit_code == 2 and "is not class-conditional" in r.output


def test_search_takes_class_labels_from_the_config_and_records_them(
        class_dir, tmp_path, inception_weights):
    config = tmp_path / "study.toml"
    config.write_text('t_ref = 4\nbudget = "1.2x"\n' + SPACE.replace("[4]", "[2]")
                      + '[rfid]\nnum_images = 4\nclass_labels = "0-3"\n'
                      + "[evolution]\npopulation = 2\nn_p = 2\nn_c = 1\nn_u = 4\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["--model", class_dir, "--storage", storage, "--study-name", "c", "--batch-size", 4,
              "--device", "cpu", "--cache-dir", tmp_path / "cache", "--inception-weights",
              inception_weights, "--no-baselines", "--no-artifacts", "--search-seed", 0]
    r = run("search", config, "--n-trials", 2, *common)
    assert r.exit_code == 0, r.output
    import optuna

    study = optuna.load_study(study_name="c", storage=storage)
    assert study.user_attrs["flexopt:settings"]["conditioning"].startswith("4 class labels")
    # other labels mean another teacher: resuming with them is refused, naming the difference
    r = run("search", config, "--n-trials", 3, "--class-labels", "0-4", *common)
    assert r.exit_code == 2 and "conditioning: stored '4 class labels" in r.output
    assert "teacher cache" not in r.output  # refused before building another teacher
    r = run("search", config, "--n-trials", 3, *common)  # the same labels resume it
    assert r.exit_code == 0, r.output
    assert TrialCounts.of_study(optuna.load_study(study_name="c", storage=storage)).searched == 3


# -------------------------------------------------------------------------- text pipelines
def test_search_reads_the_config_prompt_file(tmp_path, inception_weights):
    pytest.importorskip("transformers")
    sd_dir = tiny.save(tiny.sd_pipeline(tmp_path), tmp_path / "sd")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.txt").write_text("a red cube\n\na blue ball\n")
    config = tmp_path / "study.toml"
    config.write_text('sampler = "plms"\nt_ref = 4\nbudget = "1.2x"\n' + SPACE.replace("[4]", "[2]")
                      + '[rfid]\nnum_images = 2\nprompt_file = "prompts/p.txt"\n'
                      + "guidance_scale = 3.0\n"
                      + "[evolution]\npopulation = 2\nn_p = 2\nn_c = 1\nn_u = 4\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    r = run("search", config, "--model", sd_dir, "--storage", storage, "--study-name", "t",
            "--n-trials", 1, "--batch-size", 2, "--device", "cpu", "--cache-dir",
            tmp_path / "cache", "--inception-weights", inception_weights, "--no-baselines",
            "--no-artifacts")
    assert r.exit_code == 0, r.output
    assert "empty prompt" not in r.output
    import optuna

    stored = optuna.load_study(study_name="t", storage=storage).user_attrs["flexopt:settings"]
    expected = EvalSettings(2, prompts=("a red cube", "a blue ball"), guidance_scale=3.0)
    assert stored["conditioning"] == expected.conditioning()


def test_a_shipped_sd_config_without_its_prompt_file_says_what_to_do(tmp_path):
    from pathlib import Path

    shipped = Path(__file__).resolve().parent.parent / "studies" / "sd15-parti-70G.toml"
    config = tmp_path / shipped.name  # a copy, in case this checkout has made the prompt file
    config.write_text(shipped.read_text())
    r = run("search", config, "--model", tmp_path / "no-model")
    assert r.exit_code == 2, r.output
    assert "prompt_file of" in r.output and "studies/prompts/README.md" in r.output
