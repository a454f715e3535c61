"""The `flexopt` command line.

Each sub-command lives in its own module of this package and is registered in `_COMMANDS`
below. User mistakes (`FlexoptError`) become one `Error: ...` line and exit status 2.
"""

from __future__ import annotations

import importlib

import click

from flexopt._version import __version__
from flexopt.errors import FlexoptError, user_warnings


class UserError(click.ClickException):
    """A `FlexoptError` shown as one line, exit status 2 (like click's own usage errors)."""

    exit_code = 2


class FlexoptGroup(click.Group):
    """A click group that turns `FlexoptError` into a clean one-line error, and flexopt's own
    warnings into `Warning: ...` lines."""

    def invoke(self, ctx: click.Context):
        with user_warnings():
            try:
                return super().invoke(ctx)
            except FlexoptError as err:
                raise UserError(str(err)) from None


@click.group(cls=FlexoptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flexopt")
def main() -> None:
    """flexopt: make a pretrained diffusion model sample faster, without retraining.

    It searches, segment by segment of the denoising schedule, which steps run the whole U-Net
    (full), only its shallow branch on cached deep features (partial) or nothing (null), under a
    MACs budget, scoring candidates by rFID against the teacher (Flexiffusion).
    """


# (module, command attribute) pairs; each module holds one or a few click commands.
_COMMANDS: list[tuple[str, str]] = [
    ("flexopt.cli.space", "space"),
    ("flexopt.cli.generate", "macs"),
    ("flexopt.cli.profile", "profile"),
    ("flexopt.cli.generate", "generate"),
    ("flexopt.cli.train", "train_teacher"),
    ("flexopt.cli.rfid", "teacher"),
    ("flexopt.cli.rfid", "rfid"),
    ("flexopt.cli.fid", "fid"),
    ("flexopt.cli.clip", "clip_score"),
    ("flexopt.cli.search", "search"),
    ("flexopt.cli.export", "export"),
    ("flexopt.cli.validate", "validate"),
    ("flexopt.cli.demo", "demo"),
    ("flexopt.cli.report", "report"),
    ("flexopt.cli.report", "trials"),
    ("flexopt.cli.report", "dashboard"),
    ("flexopt.cli.proxy", "storage_proxy"),
]

for _module, _attr in _COMMANDS:
    main.add_command(getattr(importlib.import_module(_module), _attr))
