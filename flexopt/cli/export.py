"""`flexopt export`: write a trial's schedule to a file."""

from __future__ import annotations

import click

from flexopt.cli.report_options import storage_options


@click.command()
@storage_options(artifacts=False)
@click.option("--trial", "trial_number", type=click.IntRange(min=0), default=None,
              help="Export this trial's schedule.")
@click.option("--best", is_flag=True,
              help="Export the best complete trial under the budget (lowest first objective).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Schedule file to write (flexopt.schedule/1 JSON).")
def export(storage, study_name, trial_number, best, out):
    """Write a trial's schedule to a file that `generate`, `rfid` and `apply_schedule` read."""
    from flexopt.search.export import export_schedule

    for line in export_schedule(storage, study_name, out, trial_number, best).lines():
        click.echo(line)
