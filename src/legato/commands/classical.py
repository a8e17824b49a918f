"""The classical PSF-convolved fitter: ``fit-classical``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import ParamsOption
from legato.reports import write_json


def fit_classical(
    params: ParamsOption = Path("params.yaml"),
    stamps: Annotated[Path, typer.Option(help="Stamp set to fit.")] = Path("datasets/simulated/test"),
    out: Annotated[Path, typer.Option(help="Output catalogue (FITS); run.json goes next to it.")] = Path("datasets/classical/test.fits"),
    psf: Annotated[Optional[Path], typer.Option(help="PSF image, sampled without the output-pixel response (default: params).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: params, else all cores).")] = None,
    max_stamps: Annotated[Optional[int], typer.Option(help="Fit only the first N stamps (default: params).")] = None,
    sky: Annotated[Optional[str], typer.Option(help="zero, border or free (default: params).")] = None,
    start: Annotated[
        Optional[str], typer.Option(help="moments (image moments) or network (a network's estimates, --starts) (default: params).")
    ] = None,
    starts: Annotated[
        Optional[Path],
        typer.Option(
            help=(
                "For --start network: an estimator folder (predicts the stamps first) or a catalogue of its estimates (id, "
                "mag, re_arcsec, n, ellipticity)."
            )
        ),
    ] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
    track: Annotated[bool, typer.Option(help="Log the fit as the MLflow run classical-imfit.")] = True,
    report: Annotated[Optional[Path], typer.Option(help="Write the run summary (JSON) here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Fit a single Sérsic + PSF to every stamp with Imfit (the classical, GALFIT-like baseline)."""
    from legato.classical.fitter import FitSettings
    from legato.config import load_params, section
    from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
    from legato.errors import ConfigError

    loaded = load_params(params)
    options = dict(section(loaded, "classical")) if "classical" in loaded else {}
    options.update(
        {
            k: v
            for k, v in {"workers": workers, "max_stamps": max_stamps, "sky": sky, "start": start, "starts": starts}.items()
            if v is not None
        }
    )
    start_from = options.get("start", "moments")
    if start_from not in ("moments", "network"):
        raise ConfigError(f"--start must be moments or network, got {start_from!r}")
    if start_from == "network" and not options.get("starts"):
        raise ConfigError("--start network needs --starts (an estimator folder, or a catalogue of a network's estimates of these stamps)")
    for name in ("workers", "max_stamps", "block_size"):
        if options.get(name) is not None and int(options[name]) < 1:
            raise ConfigError(f"{name} must be >= 1, got {options[name]}")
    psf = psf or Path(options.get("psf", "data/psf/wfc3ir_f160w_psf.fits"))
    if not stamps.is_dir():
        raise ConfigError(f"stamp set {stamps} does not exist")
    settings = FitSettings.from_params(options, pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=ZEROPOINT_AB["F160W"])
    from legato.classical.run import fit_stamp_set
    from legato.classical.starts import network_starts

    out.parent.mkdir(parents=True, exist_ok=True)
    summary = fit_stamp_set(
        stamps,
        out,
        psf,
        settings,
        workers=options.get("workers"),
        block_size=int(options.get("block_size", 50)),
        max_stamps=options.get("max_stamps"),
        progress=progress,
        starts=network_starts(options["starts"], stamps) if start_from == "network" else None,
    )
    summary["start"] = start_from
    if track:
        from legato.classical.tracking import log_classical_run
        from legato.tracking import start_tracking, tracking_settings

        start_tracking(*tracking_settings(loaded, tracking_uri))
        summary = log_classical_run(summary, settings, stamps, out, psf)
    typer.echo(
        f"fitted {summary['fitted']} stamps into {out} ({summary['fits_per_second']} fits/s, "
        f"{summary['workers']} workers); flagged: {summary['flagged']}"
    )
    if report is not None:
        write_json(report, summary)
