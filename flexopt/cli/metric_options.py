"""`--metric/--cache-dir/--inception-weights` and `--reference…`: how images are scored."""

from __future__ import annotations

import click


def metric_options(func=None, *, metric: bool = True, search: bool = False):
    """--metric/--cache-dir/--inception-weights: how images are scored and where caches live.

    `metric=False` leaves out --metric (the teacher cache serves every metric); `search=True`
    also offers the data metric `fid` (with --reference), defaulting to the config's."""
    if func is None:
        return lambda f: metric_options(f, metric=metric, search=search)
    from flexopt.metrics import METRICS, OBJECTIVES

    teacher_help = ("rfid (Fréchet distance to the teacher's features), kid, or paired (mean "
                    "feature distance per noise)")
    metric_opt = (
        click.option("--metric", type=click.Choice(list(OBJECTIVES)), default=None,
                     help=f"The objective: {teacher_help}, all against the teacher's images "
                          "from the same noises; or fid, the standard FID against a data set "
                          "(give --reference): aims at realism instead of closeness to the "
                          "teacher. Default: the config's [rfid] metric, else rfid.")
        if search else
        click.option("--metric", type=click.Choice(list(METRICS)), default="rfid",
                     show_default=True, help=f"{teacher_help[0].upper()}{teacher_help[1:]}."))
    for opt in reversed([
        *([metric_opt] if metric else []),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Cache for teacher statistics and Inception weights "
                          "(default: $FLEXOPT_CACHE_DIR or ~/.cache/flexopt)."),
        click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
                     help="FID Inception weights to use (state dict or TorchScript)."),
    ]):
        func = opt(func)
    return func


def reference_options(default: str | None, split_default: str | None = "test"):
    """--reference/--reference-split/--reference-images: real images for the standard FID.

    `split_default=None` (search): an unset split leaves the study config's, else test."""
    opts = [
        click.option("--reference", default=default, show_default=default is not None,
                     help="Real images for the standard FID: fashion-mnist, digits, or a folder "
                          "of images."),
        click.option("--reference-split", type=click.Choice(["train", "test"]),
                     default=split_default, show_default=split_default is not None,
                     help=None if split_default else "Default: the config's, else test."),
        click.option("--reference-images", type=click.IntRange(min=2), default=None,
                     help="Use the first N reference images (default: all)."),
    ]

    def decorate(func):
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def bootstrap_option(help_text: str):
    """--bootstrap N: paired-bootstrap resamples for standard errors and intervals (0: off);
    1 is refused (one resample has no spread)."""

    def check(ctx, param, value):
        if value == 1:
            raise click.BadParameter("bootstrap 1 is invalid (one resample has no spread); "
                                     "allowed: 0 (off) or at least 2 resamples")
        return value

    return click.option("--bootstrap", "resamples", type=click.IntRange(min=0), default=0,
                        show_default=True, callback=check, help=help_text)
