"""The ``legato`` command line.

Heavy libraries (GalSim, TensorFlow, MLflow) are imported inside the commands,
so ``legato --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.errors import LegatoError

app = typer.Typer(
    name="legato",
    help="Galaxy structure (single-Sérsic mag, re, n, q) from HST/CANDELS-like stamps with deep learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="Parameter file (YAML).")]


def one_line_errors(command):
    """Report a :class:`LegatoError` as one line on stderr and exit with status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LegatoError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def write_json(path: Path, payload: dict) -> None:
    """Write a JSON report atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@app.command()
@one_line_errors
def simulate(
    params: ParamsOption = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per split).")] = Path("datasets/simulated"),
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    mag_min: Annotated[Optional[float], typer.Option(help="Brightest AB magnitude drawn.")] = None,
    mag_max: Annotated[Optional[float], typer.Option(help="Faintest AB magnitude drawn (23 = paper subset).")] = None,
    train: Annotated[Optional[int], typer.Option(help="Training galaxies.")] = None,
    val: Annotated[Optional[int], typer.Option(help="Validation galaxies.")] = None,
    test: Annotated[Optional[int], typer.Option(help="Test galaxies.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    band: Annotated[Optional[str], typer.Option(help="Filter (sets the zeropoint).")] = None,
    stamp_size: Annotated[Optional[int], typer.Option(help="Stamp side in pixels.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a JSON summary (timing) here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Simulate CANDELS F160W-like single-Sérsic stamps (train / val / test splits)."""
    from legato.config import load_params, simulation_config
    from legato.errors import ConfigError

    loaded = load_params(params)
    sizes = dict(loaded.get("simulate", {}).get("sizes") or {})
    for split, value in (("train", train), ("val", val), ("test", test)):
        if value is not None:
            if value < 0:
                raise ConfigError(f"--{split} must be >= 0, got {value}")
            sizes[split] = value
    overrides = {"mag_min": mag_min, "mag_max": mag_max, "seed": seed, "band": band, "stamp_size": stamp_size}
    overrides["sizes"] = sizes or None
    config = simulation_config(loaded, overrides)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")

    from legato.simulation.simulate import simulate as run_simulation

    summary = run_simulation(config, out, workers=workers, progress=progress)
    typer.echo(
        f"wrote {summary['total_stamps']} stamps to {out} in {summary['wall_seconds']} s "
        f"({summary['stamps_per_second']} stamps/s, {summary['workers']} workers)"
    )
    if report is not None:
        write_json(report, summary)


@app.command()
@one_line_errors
def train(
    arch: Annotated[str, typer.Option(help="Architecture: arch1 or arch2.")] = "arch1",
    params: ParamsOption = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="Simulated set folder (train/ and val/ inside).")] = Path("datasets/simulated"),
    out: Annotated[Optional[Path], typer.Option(help="Estimator folder (default models/<arch>).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Use only this many training stamps.")] = None,
    mode: Annotated[Optional[str], typer.Option(help="multi_output or per_parameter.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the run summary (JSON) here.")] = None,
):
    """Train a DeepLeGATo network on simulated stamps and log it to MLflow."""
    from legato.config import load_params
    from legato.training.config import TrainConfig

    loaded = load_params(params)
    config = TrainConfig.from_params(loaded, arch, {"epochs": epochs, "max_train": max_train, "mode": mode})
    from legato.tracking import tracking_settings
    from legato.training.train import train as run_training

    tracking_uri, experiment = tracking_settings(loaded, tracking_uri)
    summary = run_training(config, data, out or Path("models") / arch, tracking_uri=tracking_uri, experiment=experiment)
    scores = "  ".join(f"{key[7:]} {value:.4f}" for key, value in summary.items() if key.startswith("val_r2_"))
    typer.echo(f"{arch}: run {summary['run_id']}, validation R2 {scores}")
    if report is not None:
        write_json(report, summary)


def parse_mapping(values: list[str], option: str) -> dict[str, Path]:
    """``name=path`` command-line values as a dict."""
    from legato.errors import ConfigError

    mapping = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{option} expects name=path, got {value!r}")
        mapping[name] = Path(path)
    return mapping


@app.command()
@one_line_errors
def evaluate(
    params: ParamsOption = Path("params.yaml"),
    test: Annotated[Path, typer.Option(help="Test stamp set.")] = Path("datasets/simulated/test"),
    model: Annotated[Optional[list[str]], typer.Option(help="name=estimator folder (repeatable; default: params).")] = None,
    catalog: Annotated[Optional[list[str]], typer.Option(help="name=catalogue of estimates (repeatable; default: params).")] = None,
    reports: Annotated[Path, typer.Option(help="Reports folder.")] = Path("reports"),
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Score the estimators on the simulated test set: Table 1, per-bin bias/scatter/outliers, Figure 3."""
    from legato.config import load_params, section
    from legato.errors import ConfigError

    loaded = load_params(params)
    settings = section(loaded, "evaluate")
    estimators = parse_mapping(model, "--model") if model else {k: Path(v) for k, v in (settings.get("estimators") or {}).items()}
    catalogues = parse_mapping(catalog, "--catalog") if catalog else {k: Path(v) for k, v in (settings.get("catalogues") or {}).items()}
    for name, path in {**estimators, **catalogues}.items():
        if not path.exists():
            raise ConfigError(f"method {name!r}: {path} does not exist")
    if not estimators and not catalogues:
        raise ConfigError("nothing to evaluate: give --model or --catalog")
    from legato.evaluation.evaluate import evaluate as run_evaluation
    from legato.tracking import start_tracking, tracking_settings

    start_tracking(*tracking_settings(loaded, tracking_uri))
    table1 = run_evaluation(test, estimators, catalogues, settings["subsets"], settings["mag_bins"], reports_dir=reports)
    for method in [*estimators, *catalogues]:
        row = table1[method]
        typer.echo(f"{method:>10} (H <= 23)  R2 " + "  ".join(f"{p} {v:.4f}" for p, v in row.items()))


@app.command("fit-classical")
@one_line_errors
def fit_classical(
    stamps: Annotated[Path, typer.Option(help="Stamp set to fit.")] = Path("datasets/simulated/test"),
    out: Annotated[Path, typer.Option(help="Output catalogue (FITS).")] = Path("models/classical/test_fits.fits"),
    psf: Annotated[Path, typer.Option(help="PSF image (sampled without the output-pixel response).")] = Path(
        "data/psf/wfc3ir_f160w_psf.fits"
    ),
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    max_stamps: Annotated[Optional[int], typer.Option(help="Fit only the first N stamps.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Fit a single Sérsic + PSF to every stamp with Imfit (the classical, GALFIT-like baseline)."""
    from legato.classical.fitter import FitSettings
    from legato.classical.run import fit_stamp_set
    from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
    from legato.errors import ConfigError

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if max_stamps is not None and max_stamps < 1:
        raise ConfigError(f"--max-stamps must be >= 1, got {max_stamps}")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = FitSettings(pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=ZEROPOINT_AB["F160W"])
    summary = fit_stamp_set(stamps, out, psf, settings, workers=workers, max_stamps=max_stamps, progress=progress)
    typer.echo(
        f"fitted {summary['fitted']} stamps into {out} ({summary['fits_per_second']} fits/s, "
        f"{summary['workers']} workers); flagged: {summary['flagged']}"
    )


@app.command("calibrate-noise")
@one_line_errors
def calibrate_noise(
    params: ParamsOption = Path("params.yaml"),
    sample: Annotated[int, typer.Option(help="Galaxies rendered for the fit.")] = 600,
    report: Annotated[Path, typer.Option(help="Where to write the calibration.")] = Path(
        "reports/noise_calibration.json"
    ),
):
    """Fit the sky noise and exposure time to the catalogue's S/N-versus-magnitude relation."""
    from legato.config import load_params, simulation_config
    from legato.errors import ConfigError
    from legato.simulation.calibration import calibrate_noise as fit

    if sample < 50:
        raise ConfigError(f"--sample must be at least 50, got {sample}")
    result = fit(simulation_config(load_params(params)), sample_size=sample)
    write_json(report, result)
    typer.echo(
        f"sky_sigma = {result['sky_sigma']} e-/s/pixel, exposure_time = {result['exposure_time']} s; "
        f"simulated/catalogue median S/N per bin: {result['ratio']} (written to {report})"
    )


@app.command("make-psf")
@one_line_errors
def make_psf(
    out: Annotated[Path, typer.Option(help="PSF FITS file to write.")] = Path("data/psf/wfc3ir_f160w_psf.fits"),
    size: Annotated[int, typer.Option(help="Image side in pixels (odd).")] = 51,
):
    """Write the model WFC3/IR F160W PSF image (sampled at 0.06", no output-pixel response)."""
    from legato.simulation.psf import write_psf_image

    path = write_psf_image(out, size=size)
    typer.echo(f"wrote {path}")


def main() -> None:  # pragma: no cover - console entry
    """Console entry point."""
    sys.exit(app())
