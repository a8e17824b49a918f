"""The realistic domain's labelled sets: ``label-realistic``, ``assemble-realistic``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import ParamsOption, settled
from legato.reports import write_json, write_report_and_timing


def label_realistic(
    params: ParamsOption = Path("params.yaml"),
    raw: Annotated[Path, typer.Option(help="Raw realistic sets (A and B sub-folders).")] = Path("datasets/realistic/raw"),
    out: Annotated[Path, typer.Option(help="Label catalogues: <split>.fits (and A_alternative.fits).")] = Path("datasets/realistic/labels"),
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: params, else all cores).")] = None,
    max_stamps: Annotated[Optional[int], typer.Option(help="Fit only the first N stamps of each split (default: params).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Label the realistic test A and pool B by classical single-Sérsic fits (A twice: main and alternative set-up)."""
    from legato.classical.fitter import FitSettings
    from legato.classical.labels import fit_label_catalogues
    from legato.config import load_params, section
    from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
    from legato.errors import ConfigError

    options = section(load_params(params), "realistic_labels")
    workers = workers or options.get("workers")
    max_stamps = max_stamps or options.get("max_stamps")
    for name, value in (("workers", workers), ("max_stamps", max_stamps)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not raw.is_dir():
        raise ConfigError(f"raw realistic sets not found at {raw}: run legato simulate --domain realistic")
    settings = {
        name: FitSettings.from_params(dict(options.get(name) or {}), pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=ZEROPOINT_AB["F160W"])
        for name in ("main", "alternative")
    }
    summary = fit_label_catalogues(
        raw,
        out,
        Path(options.get("psf", "data/psf/wfc3ir_f160w_psf.fits")),
        settings["main"],
        settings["alternative"],
        workers=workers,
        block_size=int(options.get("block_size", 50)),
        max_stamps=max_stamps,
        progress=progress,
    )
    for split, runs in summary.items():
        typer.echo(
            f"{split}: "
            + "; ".join(f"{name} fit {run['fitted']} stamps ({run['fits_per_second']} fits/s)" for name, run in runs["fits"].items())
        )
    if report is not None:
        write_json(report, summary)


def assemble_realistic(
    raw: Annotated[Path, typer.Option(help="Raw realistic sets (A and B sub-folders).")] = Path("datasets/realistic/raw"),
    labels: Annotated[Path, typer.Option(help="Label catalogues written by legato label-realistic.")] = Path("datasets/realistic/labels"),
    out: Annotated[Path, typer.Option(help="Labelled stamp sets (A, B).")] = Path("datasets/realistic/labelled"),
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Labelled realistic stamp sets: the raw stamps with usable classical labels (seconds; the fits are published)."""
    import time

    from legato.classical.labels import LABELLED_CODE, labelled_recipes, write_labelled_sets

    start = time.perf_counter()
    summary = write_labelled_sets(raw, labels, out, progress=progress)
    for split, counts in summary.items():
        typer.echo(f"{split}: {counts['labelled']} of {counts['fitted']} galaxies labelled; dropped {counts['dropped']}")
    summary = settled(out, labelled_recipes(raw, labels, tuple(summary)), LABELLED_CODE, report, summary)
    write_report_and_timing(report, summary | {"wall_seconds": round(time.perf_counter() - start, 2)})
