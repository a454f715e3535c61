"""The flags the commands that read a study share (report, trials, dashboard, export, validate):
where the search's storage (and its sample grids) are, and --highlight's trial numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def storage_options(study: bool = True, artifacts: bool = True, several: bool = False
                    ) -> Callable[[Any], Any]:
    """--storage (and --study-name, --artifacts/--no-artifacts) as every command here takes them;
    `several`: each may be repeated (and --study-name take a comma list) to compare studies."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        opts = [click.option(
            "--storage", required=True, metavar="URL", multiple=several,
            help="Optuna storage URL of the search, e.g. sqlite:///study.db"
                 + (" (repeat it to compare studies of several storages)." if several else "."))]
        if study:
            opts.append(click.option(
                "--study-name", metavar="NAME" + (",..." if several else ""), multiple=several,
                help="Study in the storage (may be left out when it holds only one)"
                     + ("; several (a comma list, or repeated) compare the studies in one "
                        "report." if several else ".")))
        if artifacts:
            opts += [
                click.option("--artifacts", metavar="DIR", type=click.Path(file_okay=False),
                             multiple=several,
                             help="Artifact directory of the search (default for sqlite:///x.db: "
                                  "x-artifacts/ beside it; required for other storages)"
                                  + ("; one per --storage, in the same order, when comparing."
                                     if several else ".")),
                click.option("--no-artifacts", "no_artifacts", is_flag=True,
                             help="Do not read sample grids."),
            ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return wrap


def trial_numbers(_ctx: click.Context, _param: click.Parameter, value: str | None
                  ) -> tuple[int, ...]:
    """--highlight's trial numbers (`12,40`); a bad one is click's usage error."""
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected trial numbers such as 3,17") from None
