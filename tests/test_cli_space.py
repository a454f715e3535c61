"""`flexopt space` end to end through the console entry point's click group."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from flexopt.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_space_prints_size_and_grid():
    r = run("space", "--segments", "19,20,21", "--branches", "1,2,3", "--intervals", "1,2,3")
    assert r.exit_code == 0, r.output
    assert "122,927,506,308,242,280,099" in r.output
    assert "segment length L  : 3" in r.output
    assert "57 (N=19) / 60 (N=20) / 63 (N=21)" in r.output


def test_space_from_config_with_override_and_samples_json():
    r = run(
        "space",
        "studies/ddpm-cifar10-3.0G.toml",
        "--segments",
        "4",
        "--sample",
        "3",
        "--seed",
        "5",
        "--json",
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["segments"] == [4] and data["size"] == 9**4
    assert len(data["samples"]) == 3
    for s in data["samples"]:
        assert s["n_segments"] == 4
        assert len(s["steps"].replace("|", "")) == 12
        assert s["nfe"] == sum(seg["interval"] for seg in s["segments"])
    again = json.loads(
        run(
            "space",
            "studies/ddpm-cifar10-3.0G.toml",
            "--segments",
            "4",
            "--sample",
            "3",
            "--seed",
            "5",
            "--json",
        ).output
    )
    assert again == data  # same seed, same samples


@pytest.mark.parametrize(
    "args, message",
    [
        (["--segments", "", "--branches", "1", "--intervals", "1"], "--segments choices are empty"),
        (
            ["--segments", "3,2", "--branches", "1", "--intervals", "1"],
            "--segments choices 3,2 must be sorted ascending",
        ),
        (
            ["--segments", "3", "--branches", "0", "--intervals", "1"],
            "--branches choice 0 is below 1",
        ),
        (
            ["--segments", "3", "--branches", "1", "--intervals", "0"],
            "--intervals choice 0 is below 1",
        ),
        (
            ["--segments", "a", "--branches", "1", "--intervals", "1"],
            "--segments choice 'a' is not an integer",
        ),
        ([], "no search space"),
        (["missing.toml"], "study config 'missing.toml' does not exist"),
    ],
)
def test_space_bad_input_is_one_line_exit_2(args, message):
    r = run("space", *args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_console_script_bad_toml_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[space\n")
    p = subprocess.run(
        [sys.executable, "-m", "flexopt", "space", str(bad)], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert "is not valid TOML" in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1
