"""Storage URLs and the user mistakes around a search: each is one line naming the bad value (a
password never shown), and the storage is checked before a model loads."""

from __future__ import annotations

import socket
import threading

import numpy as np
import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.metrics.stats import FeatureStats
from flexopt.metrics.teacher import TeacherCache, TeacherKey
from flexopt.run.budget import Budget
from flexopt.search.storage import LOCK_SUFFIX, StudyLock, make_storage, mask_url, storage_error
from flexopt.space.schedule import Schedule

SPACE = ["--segments", "3", "--branches", "1", "--intervals", "1,2", "--t-ref", "6"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, message):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("url, shown", [
    ("postgresql://flex:pw@db:5432/x", "postgresql://flex:***@db:5432/x"),
    ("postgresql+psycopg://flex:p%40ss@db/x", "postgresql+psycopg://flex:***@db/x"),
    ("postgresql://flex@db/x", "postgresql://flex@db/x"),
    ("sqlite:///study.db", "sqlite:///study.db"),
    ("grpc://host:13000", "grpc://host:13000"),
])
def test_mask_url(url, shown):
    assert mask_url(url) == shown


def test_missing_driver_names_the_module_and_the_extra():
    with pytest.raises(FlexoptError) as err:
        make_storage("postgresql+pg8000://u:pw@127.0.0.1:1/x")
    assert str(err.value) == ("storage 'postgresql+pg8000://u:***@127.0.0.1:1/x' needs the missing "
                              "Python module 'pg8000'; allowed: install the package that "
                              "provides 'pg8000'")
    missing = ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
    assert str(storage_error("postgresql://u:pw@h/x", missing)).endswith(
        "needs the missing Python module 'psycopg'; allowed: pip install 'flexopt[postgres]'")


def test_unreachable_postgres_is_one_masked_line():
    with pytest.raises(FlexoptError) as err:
        make_storage("postgresql://u:hunter2@127.0.0.1:1/x")
    text = str(err.value)
    assert text.startswith("storage 'postgresql://u:***@127.0.0.1:1/x' cannot be opened: ")
    assert "hunter2" not in text and "\n" not in text


@pytest.mark.parametrize("url, message", [
    ("grpc://host", "storage 'grpc://host' is not a gRPC proxy address; allowed: grpc://HOST:PORT"),
    ("nope://x", "storage 'nope://x' is not supported; allowed: sqlite:///FILE"),
])
def test_bad_storage_urls(url, message):
    with pytest.raises(FlexoptError) as err:
        make_storage(url)
    assert str(err.value).startswith(message)


def test_search_checks_the_storage_before_the_model(tmp_path):
    # the model does not exist: the storage error comes first, before any model loads
    r = run("search", "--model", tmp_path / "no-model", "--budget", "2x", *SPACE,
            "--num-images", 4, "--storage", "postgresql://u:hunter2@127.0.0.1:1/x")
    one_line_error(r, "storage 'postgresql://u:***@127.0.0.1:1/x' cannot be opened")
    assert "hunter2" not in r.output


@pytest.mark.parametrize("budget", ["1e400", "1e300G", "inf", "nan"])
def test_infinite_budget_refused(budget):
    with pytest.raises(FlexoptError, match=f"^budget {budget!r} is invalid; allowed: avg MACs"):
        Budget.parse(budget)
    r = run("search", "--model", "flexopt:fashion-mnist", "--budget", budget, *SPACE,
            "--num-images", 4)
    one_line_error(r, f"budget {budget!r} is invalid")


def test_workers_zero_refused():
    r = run("search", "--workers", 0)
    assert r.exit_code == 2 and "--workers" in r.output and "Traceback" not in r.output


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim")


def test_outputs_under_a_file_are_one_line(model_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    schedule = Schedule.uniform(6, 2, 1).save(tmp_path / "s.json")
    r = run("generate", model_dir, "--schedule", schedule, "--num-images", 2, "--device", "cpu",
            "--out", afile / "sub")
    one_line_error(r, f"cannot write {str(afile / 'sub')!r}")
    r = run("demo", "--out", afile / "sub")
    one_line_error(r, f"cannot write {str(afile / 'sub')!r}")
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(storage=storage, study_name="x")
    study.set_user_attr("flexopt:settings", {"segments": [1], "branches": [1], "intervals": [1],
                                             "t_ref": 1, "sampler": "ddim"})
    study.add_trial(optuna.trial.create_trial(
        value=1.0, user_attrs={"schedule": Schedule.full(6).to_dict()}))
    r = run("export", "--storage", storage, "--trial", 0, "--out", afile / "best.json")
    one_line_error(r, f"cannot write {str(afile / 'best.json')!r}: {str(afile)!r} is a file, "
                      "not a folder")


def test_storage_proxy_bad_inputs():
    r = run("storage-proxy", "--storage", "postgresql://u:hunter2@127.0.0.1:1/x", "--port", 1)
    one_line_error(r, "storage 'postgresql://u:***@127.0.0.1:1/x' cannot be opened")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("storage-proxy", "--storage", "sqlite:///:memory:", "--host", "127.0.0.1",
                "--port", port)
    one_line_error(r, f"port {port} is in use; allowed: a free port (--port)")


def test_study_lock_is_exclusive_and_hidden(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'l.db'}", heartbeat=None)
    optuna.create_study(storage=storage, study_name="s")
    lock = StudyLock(storage, "s")
    inside, overlaps = [], []

    def hold():
        for _ in range(5):
            with lock():
                inside.append(1)
                overlaps.append(len(inside))
                inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1] * 15
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]  # released: no lock left
    # a lock whose holder died is broken once stale
    storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s" + LOCK_SUFFIX)
    warned = pytest.warns(UserWarning, match=r"study lock 's:flexopt-lock' has been held for "
                                             r".* broken once held 0.4 s")
    with warned, StudyLock(storage, "s", stale_after=0.4)():  # told before it is broken
        pass
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]


def test_teacher_built_once_while_others_wait(tmp_path):
    key = TeacherKey("m", "P", "{}", "ddim", 10, 0, 4)
    built = []

    def build():
        built.append(1)
        feats = np.random.default_rng(0).normal(size=(4, 3))
        return FeatureStats.from_features(feats), np.zeros((4, 1, 2, 2), "uint8")

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        TeacherCache(tmp_path).get_or_build(key, build).status)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [1] and sorted(results) == ["built", "hit", "hit"]


def test_hub_id_on_an_offline_machine_is_one_line_at_once(monkeypatch):
    from huggingface_hub import constants

    from flexopt import hub
    from flexopt.models import loading as models

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_reachable", lambda host, port, timeout: False)
    monkeypatch.setattr(models, "_from_pretrained", lambda *a, **k: pytest.fail("tried the hub"))
    with pytest.raises(FlexoptError) as err:
        models.load_pipeline("nobody/nothing")
    assert str(err.value).startswith(
        "model 'nobody/nothing' cannot be loaded as a diffusers model: it is not in the local "
        "Hugging Face cache and huggingface.co cannot be reached from here (no answer within 3 s)")


def test_database_storage_without_artifacts_folder_is_masked():
    from flexopt.search.artifacts import artifact_dir

    with pytest.raises(FlexoptError) as err:
        artifact_dir("postgresql://u:hunter2@db/x")
    assert str(err.value).startswith("storage 'postgresql://u:***@db/x' is not a SQLite file")
