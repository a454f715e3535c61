"""Options shared by the sub-commands: a missing required one is a usage error, not a traceback
(click >= 8.3 counts an explicit `default=None` as a value, which silently disabled `required`)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from flexopt.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "flexopt:fashion-mnist", "--schedule", "s.json", "--out", "o"],
        ["teacher", "flexopt:fashion-mnist"],
        ["rfid", "flexopt:fashion-mnist", "--schedule", "s.json"],
        ["fid", "flexopt:fashion-mnist", "--schedule", "s.json"],
    ],
)
def test_missing_num_images_is_a_usage_error(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "Missing option '--num-images'" in r.output and "Traceback" not in r.output


def test_search_num_images_is_optional():
    # the config's [rfid] num_images, else 1000, as the help says
    opt = next(p for p in main.commands["search"].params if p.name == "num_images")
    assert not opt.required and "else 1000" in opt.help


WARNING_SCRIPT = """
import warnings, click
import flexopt.search.loop as loop
from flexopt.cli import FlexoptGroup

group = FlexoptGroup()

@group.command()
def warn():
    warnings.warn_explicit("study lock held 5 s", UserWarning, loop.__file__, 70)
    warnings.warn_explicit("a library's note", FutureWarning, "/elsewhere/lib.py", 3)
    with warnings.catch_warnings(record=True) as log:  # a caller recording them still can
        warnings.simplefilter("always")
        warnings.warn_explicit("kept", UserWarning, loop.__file__, 71)
    click.echo("recorded: " + ", ".join(str(w.message) for w in log))
    warnings.warn_explicit("no file", UserWarning, "<string>", 1)

before = warnings.formatwarning
group(["warn"], standalone_mode=False)
click.echo(f"restored: {warnings.formatwarning is before}")
"""


def test_flexopt_warnings_are_one_line_others_keep_their_origin():
    # in a process of its own: pytest records warnings instead of showing them
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", WARNING_SCRIPT], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "Warning: study lock held 5 s" and "loop.py" not in r.stderr
    assert lines[1] == "/elsewhere/lib.py:3: FutureWarning: a library's note"
    assert lines[2] == "<string>:1: UserWarning: no file"  # not a file of ours: Python's format
    assert r.stdout == "recorded: kept\nrestored: True\n" and "kept" not in r.stderr
