"""`flexopt demo`: the whole job on the embedded model — teacher cache, search, report."""

from __future__ import annotations

from pathlib import Path

import click

from flexopt.run.prefix import DEFAULT_PREFIX_CACHE_MB

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "demo.toml"
# The closing held-out comparison: 64 images (about 75 s on 2 CPU cores) is where it decides on
# the shipped model (docs/teacher.md: at 32 the interval against the fewer-step teacher held 0);
# 1,000 paired resamples give each difference its interval (seconds at 64 images).
HELD_OUT = 64
BOOTSTRAP = 1000
SEARCH_MINUTES = 3.25  # so the whole demo stays within 5 minutes with the comparison


@click.command()
@click.option("--out", "out_dir", default="flexopt-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder for the study database, artifacts, report and best schedule.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=SEARCH_MINUTES,
              show_default=True, help="Time limit of the search itself.")
@click.option("--n-trials", type=click.IntRange(min=1), default=None,
              help="Searched candidates in the study, the baselines on top (default: the "
                   "demo config's, 55; --minutes usually stops it first).")
@click.option("--num-images", type=click.IntRange(min=2), default=None,
              help="Images per candidate (default: the demo config's, 32). Fewer is quicker and "
                   "noisier; a study keeps its count (another one is refused on a re-run: give "
                   "another --out).")
@click.option("--device", default=None, help="Torch device (default: cuda if available).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache for teacher statistics and Inception weights.")
@click.option("--validate-images", type=click.IntRange(min=0), default=HELD_OUT, show_default=True,
              help="Held-out images (unseen seeds) on which the best searched schedule and the "
                   "baselines are compared at the end, with a paired-bootstrap interval on each "
                   "difference; 0 skips it.")
@click.option("--prefix-cache-mb", type=click.FloatRange(min=0),
              default=DEFAULT_PREFIX_CACHE_MB, show_default=True,
              help="CPU memory (MiB) for shared-prefix reuse, as in `flexopt search`; 0 "
                   "disables it.")
@click.pass_context
def demo(ctx, out_dir, minutes, n_trials, num_images, device, cache_dir, validate_images,
         prefix_cache_mb):
    """Run flexopt end to end on the embedded Fashion-MNIST teacher (no download).

    Builds the teacher's cached statistics, runs an evolutionary search under a 2.5x budget (its
    space fitted to the budget, the strongest baselines in its first population), exports the
    best schedule, compares it with the baselines on held-out seeds (with a paired-bootstrap
    interval: "beats", "loses" or "not distinguishable on these images") and writes the HTML
    report — about five minutes on 2 CPU cores. Re-running continues the same study. The
    settings are flexopt/demo.toml (studies/demo.toml).
    """
    from flexopt.cli.export import export
    from flexopt.cli.report import report
    from flexopt.cli.search import search
    from flexopt.cli.validate import validate
    from flexopt.errors import FlexoptError
    from flexopt.files import make_folder
    from flexopt.search.config import StudyConfig

    cfg = StudyConfig.load(DEMO_CONFIG)
    out = make_folder(out_dir)
    storage = f"sqlite:///{out / 'demo.db'}"
    click.echo(f"flexopt demo: {cfg.model}, {cfg.sampler} {cfg.choices.t_ref} steps, budget "
               f"{cfg.budget}, {num_images or cfg.num_images} images per candidate, results in "
               f"{out}/")
    ctx.invoke(search, config=str(DEMO_CONFIG), storage=storage, n_trials=n_trials,
               num_images=num_images,
               timeout=minutes, device=device, cache_dir=cache_dir, search_seed=0,
               baselines_mode="best", prefix_cache_mb=prefix_cache_mb)
    best = out / "best.json"
    from flexopt.search.study import feasible_trials, load_study

    if not feasible_trials(load_study(storage, cfg.study_name)):
        raise FlexoptError("the demo's search has no trial under the budget yet (stopped by "
                           "--minutes or --n-trials); run `flexopt demo` again to continue it")
    ctx.invoke(export, storage=storage, study_name=cfg.study_name, best=True, out=str(best))
    if validate_images:  # before the report, which shows it
        click.echo(f"\non {validate_images} held-out images (seeds the search never used):")
        ctx.invoke(validate, storage=storage, study_name=cfg.study_name,
                   num_images=validate_images, device=device, cache_dir=cache_dir,
                   resamples=BOOTSTRAP, json_out=str(out / "validation.json"))
    html = out / "report.html"
    # report takes several studies: its --storage / --study-name are tuples
    ctx.invoke(report, storage=(storage,), study_name=(cfg.study_name,), out=str(html),
               highlight=())
    click.echo("\nwhat next:")
    click.echo(f"  open {html}")
    click.echo(f"  flexopt generate {cfg.model} --schedule {best} --num-images 16 --out "
               f"{out / 'samples'}")
    click.echo(f"  flexopt dashboard --storage {storage}")
    click.echo(f"  flexopt trials --storage {storage} --pareto")
