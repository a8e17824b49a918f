"""The ``legato`` command line.

Heavy libraries (GalSim, TensorFlow, MLflow) are imported inside the commands,
so ``legato --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.errors import LegatoError
from legato.reports import write_json, write_report_and_timing

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


@app.command()
@one_line_errors
def simulate(
    params: ParamsOption = Path("params.yaml"),
    domain: Annotated[str, typer.Option(help="sersic (train/val/test single-Sérsic sets) or realistic (test A and pool B).")] = "sersic",
    out: Annotated[Optional[Path], typer.Option(help="Output folder, one sub-folder per split (default: datasets/simulated or datasets/realistic/raw).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    mag_min: Annotated[Optional[float], typer.Option(help="Brightest AB magnitude drawn.")] = None,
    mag_max: Annotated[Optional[float], typer.Option(help="Faintest AB magnitude drawn (23 = paper subset).")] = None,
    train: Annotated[Optional[int], typer.Option(help="Training galaxies.")] = None,
    val: Annotated[Optional[int], typer.Option(help="Validation galaxies.")] = None,
    test: Annotated[Optional[int], typer.Option(help="Test galaxies.")] = None,
    size_a: Annotated[Optional[int], typer.Option(help="Realistic domain: galaxies in test A.")] = None,
    size_b: Annotated[Optional[int], typer.Option(help="Realistic domain: galaxies in pool B.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    band: Annotated[Optional[str], typer.Option(help="Filter (sets the zeropoint).")] = None,
    stamp_size: Annotated[Optional[int], typer.Option(help="Stamp side in pixels.")] = None,
    noiseless: Annotated[bool, typer.Option(help="Single-Sérsic: store noiseless models (noise drawn at training time, legato train-production).")] = False,
    bands: Annotated[bool, typer.Option(help="Single-Sérsic: draw every galaxy in one of the bands of params.yaml's bands section (its PSF, zeropoint, prior; PSF jitter), with that section's sizes and seed.")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Write a JSON summary here (its timing goes to reports/timing/, untracked).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Simulate CANDELS F160W-like stamps: single-Sérsic train / val / test, or the realistic test A / pool B."""
    from legato.config import load_params, simulation_config
    from legato.errors import ConfigError

    loaded = load_params(params)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if domain == "realistic":
        from legato.simulation.realistic import realistic_config, simulate_realistic

        sizes = dict(loaded.get("realistic", {}).get("sizes") or {})
        sizes.update({k: v for k, v in (("A", size_a), ("B", size_b)) if v is not None})
        config = realistic_config(loaded, {"sizes": sizes, "seed": seed})
        out = out or Path("datasets/realistic/raw")
        from legato.simulation.realistic import CODE, split_recipes

        summary = simulate_realistic(config, out, workers=workers, progress=progress)
        typer.echo(f"wrote realistic test A and pool B {summary['stamps']} to {out} in {summary['wall_seconds']} s; kinds {summary['kinds']}")
        write_report_and_timing(report, _settled(out, split_recipes(config), CODE, report, summary))
        return
    if domain != "sersic":
        raise ConfigError(f"unknown domain {domain!r}; choose sersic or realistic")
    out = out or Path("datasets/simulated")
    sizes = dict(loaded.get("simulate", {}).get("sizes") or {})
    for split, value in (("train", train), ("val", val), ("test", test)):
        if value is not None:
            if value < 0:
                raise ConfigError(f"--{split} must be >= 0, got {value}")
            sizes[split] = value
    overrides = {"mag_min": mag_min, "mag_max": mag_max, "seed": seed, "band": band, "stamp_size": stamp_size}
    overrides["sizes"] = sizes or None
    if bands:
        from legato.config import band_mixture

        mixture, band_sizes, band_seed = band_mixture(loaded)
        overrides["sizes"] = band_sizes | {split: value for split, value in (("train", train), ("val", val), ("test", test)) if value is not None}
        overrides["seed"] = seed if seed is not None else band_seed
    config = simulation_config(loaded, overrides)
    if noiseless:
        config = dataclasses.replace(config, noiseless=True)
    if bands:
        config = dataclasses.replace(config, bands=mixture)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")

    from legato.simulation.simulate import CODE, split_recipes
    from legato.simulation.simulate import simulate as run_simulation

    summary = run_simulation(config, out, workers=workers, progress=progress)
    typer.echo(
        f"wrote {summary['total_stamps']} stamps to {out} in {summary['wall_seconds']} s "
        f"({summary['stamps_per_second']} stamps/s, {summary['workers']} workers)"
    )
    write_report_and_timing(report, _settled(out, split_recipes(config), CODE, report, summary))


def _settled(out: Path, recipes: dict, code_sources: tuple, report: Optional[Path], summary: dict) -> dict:
    """Fingerprint a regenerated set against the one its report records (docs/reproducibility.md); the summary with them."""
    from legato.io.fingerprint import code_digest, settle_set

    records, outcomes = settle_set(out, recipes, code_digest(code_sources), report)
    for split, outcome in outcomes.items():
        typer.echo(f"{out / split}: fingerprint {outcome['outcome']}" + (f" (largest deviation {outcome['largest_deviation']} of the tolerance)" if "largest_deviation" in outcome else ""))
    return summary | {"fingerprints": records, "fingerprint_check": {"set": str(out), "splits": outcomes}}


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


from legato.options import parse_mapping  # noqa: E402  (name=path options, shared with the command modules)


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
    validation = settings.get("validation_report")
    if validation and not Path(validation).is_file():
        raise ConfigError(f"validation report {validation} does not exist: run `legato validate` first")
    crb = None
    if settings.get("crb_table"):
        if not Path(settings["crb_table"]).is_file():
            raise ConfigError(f"Cramér-Rao bound table {settings['crb_table']} does not exist: run `legato crb` first")
        crb_bins = (loaded.get("crb") or {}).get("mag_bins", settings["mag_bins"])
        crb = {"table": settings["crb_table"], "mag_bins": crb_bins}
    table1 = run_evaluation(
        test, estimators, catalogues, settings["subsets"], settings["mag_bins"], reports_dir=reports,
        validation_report=validation, crb=crb, fit_quality=_fit_quality(loaded),
    )
    for method in [*estimators, *catalogues]:
        row = table1[method]
        typer.echo(f"{method:>10} (H <= 23)  R2 " + "  ".join(f"{p} {v:.4f}" for p, v in row.items()))
    if "limit" in table1:
        typer.echo(f"{'limit':>10} (H <= 23)  R2 " + "  ".join(f"{p} {v:.4f}" for p, v in table1["limit"].items()))


def _fit_quality(loaded: dict) -> dict | None:
    """Goodness-of-fit settings of the evaluation (PSF of the simulator, BAD_FIT threshold), if params give both."""
    psf = (loaded.get("simulate") or {}).get("psf")
    threshold = (loaded.get("fit_quality") or {}).get("chi2_threshold")
    return {"psf": psf, "chi2_threshold": float(threshold)} if psf and threshold is not None else None


@app.command("fit-classical")
@one_line_errors
def fit_classical(
    params: ParamsOption = Path("params.yaml"),
    stamps: Annotated[Path, typer.Option(help="Stamp set to fit.")] = Path("datasets/simulated/test"),
    out: Annotated[Path, typer.Option(help="Output catalogue (FITS); run.json goes next to it.")] = Path("datasets/classical/test.fits"),
    psf: Annotated[Optional[Path], typer.Option(help="PSF image, sampled without the output-pixel response (default: params).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: params, else all cores).")] = None,
    max_stamps: Annotated[Optional[int], typer.Option(help="Fit only the first N stamps (default: params).")] = None,
    sky: Annotated[Optional[str], typer.Option(help="zero, border or free (default: params).")] = None,
    start: Annotated[Optional[str], typer.Option(help="moments (image moments) or network (a network's estimates, --starts) (default: params).")] = None,
    starts: Annotated[Optional[Path], typer.Option(help="For --start network: an estimator folder (predicts the stamps first) or a catalogue of its estimates (id, mag, re_arcsec, n, ellipticity).")] = None,
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
    options.update({k: v for k, v in {"workers": workers, "max_stamps": max_stamps, "sky": sky, "start": start, "starts": starts}.items() if v is not None})
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
        stamps, out, psf, settings, workers=options.get("workers"), block_size=int(options.get("block_size", 50)),
        max_stamps=options.get("max_stamps"), progress=progress,
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


@app.command("label-realistic")
@one_line_errors
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
        raw, out, Path(options.get("psf", "data/psf/wfc3ir_f160w_psf.fits")), settings["main"], settings["alternative"],
        workers=workers, block_size=int(options.get("block_size", 50)), max_stamps=max_stamps, progress=progress,
    )
    for split, runs in summary.items():
        typer.echo(f"{split}: " + "; ".join(f"{name} fit {run['fitted']} stamps ({run['fits_per_second']} fits/s)" for name, run in runs["fits"].items()))
    if report is not None:
        write_json(report, summary)


@app.command("assemble-realistic")
@one_line_errors
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
    summary = _settled(out, labelled_recipes(raw, labels, tuple(summary)), LABELLED_CODE, report, summary)
    write_report_and_timing(report, summary | {"wall_seconds": round(time.perf_counter() - start, 2)})


ingest_app = typer.Typer(help="Ingest real data (GALFIT blocks, or a mosaic with a GALFIT catalogue) as a labelled stamp set.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("galfit")
@one_line_errors
def ingest_galfit(
    inputs: Annotated[list[Path], typer.Argument(help="GALFIT output blocks, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Stamp-set folder to write.")] = Path("datasets/real/uds"),
    pattern: Annotated[str, typer.Option(help="File pattern inside folders (one band per set).")] = "H.gf*.fits",
    size: Annotated[int, typer.Option(help="Stamp side, pixels (the network's input).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the noise that pads small blocks.")] = 0,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
):
    """GALFIT output blocks -> stamps centred on the target and its GALFIT labels; unusable files are reported and skipped."""
    from legato.io.ingest import ingest_galfit_blocks

    paths = [p for item in inputs for p in (sorted(item.glob(pattern)) if item.is_dir() else [item])]
    summary = ingest_galfit_blocks(paths, out, size=size, seed=seed)
    for reason in summary["skipped"].values():
        typer.echo(f"skipped: {reason}", err=True)
    typer.echo(f"ingested {summary['ingested']} of {len(paths)} blocks ({summary['band']}) into {out}; skipped {len(summary['skipped'])}; flagged {summary['flagged']}")
    if report is not None:
        write_json(report, summary)


@ingest_app.command("mosaic")
@one_line_errors
def ingest_mosaic_command(
    mosaic: Annotated[Path, typer.Argument(help="Mosaic FITS image with a celestial WCS (electrons/s).")],
    catalogue: Annotated[Path, typer.Argument(help="GALFIT catalogue in the van der Wel format (NUMBER RA DEC f mag dmag re dre n dn q dq pa dpa sn).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Stamp-set folder to write.")] = Path("datasets/real/mosaic"),
    size: Annotated[int, typer.Option(help="Stamp side, pixels.")] = 64,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
):
    """Cut the catalogue's sources out of a mosaic (RA/Dec through the WCS) with their GALFIT labels."""
    from legato.io.ingest import ingest_mosaic

    summary = ingest_mosaic(mosaic, catalogue, out, size=size)
    typer.echo(f"ingested {summary['ingested']} sources into {out}; skipped {len(summary['skipped'])} (off the mosaic or bad pixels); flagged {summary['flagged']}")
    if report is not None:
        write_json(report, summary)


@app.command()
@one_line_errors
def adapt(
    params: ParamsOption = Path("params.yaml"),
    base: Annotated[Optional[Path], typer.Option(help="Simulation-trained estimator (default: params adapt.base).")] = None,
    test: Annotated[Path, typer.Option(help="Labelled test A.")] = Path("datasets/realistic/labelled/A"),
    pool: Annotated[Path, typer.Option(help="Labelled pool B.")] = Path("datasets/realistic/labelled/B"),
    out: Annotated[Optional[Path], typer.Option(help="Adapted estimator folder (default: params adapt.out).")] = None,
    reports: Annotated[Path, typer.Option(help="Reports folder (figure5.json, table2.json, plots, figures).")] = Path("reports"),
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Domain adaptation: the fine-tuning set-up chosen, then fine-tune versus from scratch over |B_i| and seeds (Figure 5) and Table 2."""
    from legato.config import load_params, section
    from legato.tracking import tracking_settings
    from legato.training.adapt import AdaptConfig, adaptation_curve, classical_versus_classical
    from legato.training.data import load_split
    from legato.evaluation.adaptation import write_adaptation_reports

    loaded = load_params(params)
    options = section(loaded, "adapt")
    config = AdaptConfig.from_params(options)
    base = base or Path(options.get("base", "models/production_tracked"))
    out = out or Path(options.get("out", "models/adapted"))
    uri, experiment = tracking_settings(loaded, tracking_uri)
    result = adaptation_curve(config, base, test, pool, out, uri, experiment)
    _, test_labels, _ = load_split(test)
    result["classical_vs_classical"] = classical_versus_classical(test_labels)
    written = write_adaptation_reports(result, reports)
    from mlflow import MlflowClient

    for path in written:
        MlflowClient(tracking_uri=uri).log_artifact(result["parent_run_id"], str(path), "reports")
    typer.echo(f"adapted model {out} (run {result['run_id']}); wrote {', '.join(str(p) for p in written)}")


@app.command("real-check")
@one_line_errors
def real_check_command(
    estimator: Annotated[list[str], typer.Option(help="NAME=FOLDER of an estimator to score (repeatable).")],
    real: Annotated[Path, typer.Option(help="Ingested real stamps with GALFIT labels (legato ingest galfit).")] = Path("datasets/real/uds"),
    report: Annotated[Path, typer.Option(help="The real-check report (JSON).")] = Path("reports/real_check.json"),
):
    """Estimators on real galaxies against their GALFIT labels, galaxy by galaxy with the flags (reported, never tuned on)."""
    from legato.errors import ConfigError
    from legato.training.adapt import real_check

    named = dict(item.split("=", 1) for item in estimator if "=" in item)
    if len(named) != len(estimator):
        raise ConfigError(f"--estimator takes NAME=FOLDER, got {estimator}")
    missing = [folder for folder in named.values() if not Path(folder).is_dir()]
    if missing:
        raise ConfigError(f"no estimator folder {', '.join(missing)}")
    if not real.is_dir():
        raise ConfigError(f"real stamp set {real} not found: run legato ingest galfit first")
    summary = real_check(named, real)
    write_json(report, summary)
    for name, scores in summary["estimators"].items():
        typer.echo(f"{name}: median Δmag (GALFIT - estimate) {scores['median_error_check_sample']['mag']} on the {summary['n_check_sample']} galaxies of the check sample, "
                   f"{scores['median_error_check_sample_uncut']['mag']} on the {summary['n_check_sample_uncut']} not cut by a no-data band")


ModelOption = Annotated[Optional[str], typer.Option("--model", help="Registered model name (default: params registry.name).")]
AliasOption = Annotated[str, typer.Option(help="Alias to move.")]


def _registry(params: Path, tracking_uri: str | None, must_exist: bool = True):
    """The ``registry`` settings of params.yaml and a registry client on the project's store."""
    from legato.config import load_params
    from legato.registry.store import registry_client
    from legato.tracking import tracking_settings

    loaded = load_params(params)
    settings = dict(loaded.get("registry") or {})
    uri, _ = tracking_settings(loaded, tracking_uri)
    return settings, registry_client(uri, must_exist=must_exist)


@app.command()
@one_line_errors
def register(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
    promote_best: Annotated[bool, typer.Option("--promote-best/--no-promote", help="Offer the best version to the alias through the gates.")] = True,
    report: Annotated[Optional[Path], typer.Option(help="Write the registry state (JSON) here.")] = None,
):
    """Register the trained estimators (params registry.estimators) as versions of one model, tagged."""
    from legato.errors import ConfigError
    from legato.registry.promotion import offer_domain_alias, promote
    from legato.registry.store import DEFAULT_ALIAS, DEFAULT_MODEL_NAME, version_by_alias
    from legato.evaluation.metrics import PARAMETERS
    from legato.registry.versions import register_estimator, version_metrics

    settings, client = _registry(params, tracking_uri, must_exist=False)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    estimators = settings.get("estimators") or {}
    if not estimators:
        raise ConfigError("params.yaml registry.estimators lists no estimator folder")
    subset, tolerance = settings.get("gate_subset", "paper_h23"), float(settings.get("tolerance", 0.0))
    versions = {}
    for label, folder in estimators.items():
        if not Path(folder).is_dir():
            raise ConfigError(f"estimator {label!r}: {folder} does not exist")
        version, created = register_estimator(client, name, folder)
        versions[label] = version
        typer.echo(f"{name} version {version.version}: {label} ({'registered' if created else 'already registered'})")
    state = {"model": name, "versions": {k: v.version for k, v in versions.items()}}
    if promote_best:
        alias = settings.get("alias", DEFAULT_ALIAS)
        # only versions evaluated on the simulated test set (every gate metric present) are offered
        gated = {k: version_metrics(client, v, subset) for k, v in versions.items()}
        score = {k: sum(m.values()) for k, m in gated.items() if len(m) == len(PARAMETERS)}
        if not score:
            raise ConfigError(f"no registered version has the gate metrics test_r2_*_{subset}: run legato evaluate first")
        best = max(score, key=score.get)
        outcome = promote(client, name, versions[best].version, alias, subset, tolerance)
        holder = version_by_alias(client, name, alias, required=False)
        typer.echo(
            f"{alias}: version {holder.version if holder else 'none'}"
            + (f" (promoted {best})" if outcome["promoted"] else f" (kept; {best} not promoted: {'; '.join(outcome['failures'])})")
        )
        state.update({"alias": alias, "holder": holder.version if holder else None, "offered": best, "promoted": outcome["promoted"]})
    domain = settings.get("domain_alias")
    if promote_best and domain and domain.get("candidate") in versions:
        state["domain_alias"] = offer_domain_alias(client, name, versions, domain)
        typer.echo(f"{domain['alias']}: version {state['domain_alias']['holder']} ({state['domain_alias']['summary']})")
    if report is not None:
        write_json(report, state)


@app.command("promote")
@one_line_errors
def promote_command(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    version: Annotated[Optional[str], typer.Option(help="Candidate version (default: the newest).")] = None,
    alias: AliasOption = "champion",
    tolerance: Annotated[Optional[float], typer.Option(help="Allowed R2 shortfall per parameter (default: params).")] = None,
    subset: Annotated[Optional[str], typer.Option(help="Test subset whose metrics gate (default: params).")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if a gate fails (needs --reason).")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded on the version).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Move an alias (default champion) to a version that passes the gates; the previous holder stays reachable."""
    from legato.registry.promotion import promote
    from legato.registry.store import DEFAULT_MODEL_NAME, get_model

    settings, client = _registry(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    get_model(client, name)
    if version is None:
        version = str(max(int(v.version) for v in client.search_model_versions(f"name='{name}'")))
    outcome = promote(
        client, name, version, alias, subset or settings.get("gate_subset", "paper_h23"),
        float(settings.get("tolerance", 0.0)) if tolerance is None else tolerance, force=force, reason=reason,
    )
    if not outcome["promoted"]:
        typer.echo(f"error: version {version} not promoted to {alias!r}: {'; '.join(outcome['failures'])}", err=True)
        raise typer.Exit(code=1)
    forced = " (forced)" if outcome["forced"] else ""
    typer.echo(f"{name}@{alias} -> version {outcome['version']}{forced} (was {outcome['previous'] or 'unset'}); by {outcome['by']}: {outcome['reason']}")


@app.command()
@one_line_errors
def rollback(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    alias: AliasOption = "champion",
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded on the version).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Give an alias back to the version that held it before the last promotion."""
    from legato.registry.promotion import rollback as run_rollback
    from legato.registry.store import DEFAULT_MODEL_NAME

    settings, client = _registry(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    outcome = run_rollback(client, name, alias, reason)
    typer.echo(f"{name}@{alias} -> version {outcome['version']} (was {outcome['previous']}); by {outcome['by']}")


@app.command("models")
@one_line_errors
def list_models(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """List the registered versions with their aliases, provenance and test R2."""
    from datetime import datetime, timezone

    from legato.evaluation.metrics import PARAMETERS
    from legato.registry.store import DEFAULT_MODEL_NAME, all_versions, get_model
    from legato.registry.versions import version_metrics

    settings, client = _registry(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    get_model(client, name)
    subset = settings.get("gate_subset", "paper_h23")
    header = ["version", "aliases", "architecture", "domain", "validation", *[f"R2 {p}" for p in PARAMETERS], "created (UTC)"]
    rows = []
    for v in all_versions(client, name):
        tags = v.tags or {}
        metrics = version_metrics(client, v, subset)
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
        rows.append([v.version, ",".join(sorted(v.aliases or [])) or "-", tags.get("architecture", "?"),
                     tags.get("training_domain", "?"), tags.get("validation", "?"),
                     *[f"{metrics[p]:.4f}" if p in metrics else "-" for p in PARAMETERS], created])
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    typer.echo(f"{name} (test R2 on {subset})")
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


@app.command()
@one_line_errors
def serve(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    alias: AliasOption = "champion",
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 5001,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 1,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Serve models:/<model>@<alias> with `mlflow models serve --env-manager local` (runs in the foreground).

    The training range of PARAMS (as `legato predict --params`) goes to the server
    for the OUT_OF_RANGE flag; see docs/registry.md.
    """
    import os

    import mlflow

    from legato.inference.flags import TrainingRange
    from legato.registry.store import DEFAULT_MODEL_NAME, version_by_alias
    from legato.serving.server import mlflow_environment, serve_command, serving_environment

    settings, client = _registry(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    version = version_by_alias(client, name, alias)
    uri = f"models:/{name}@{alias}"
    typer.echo(f"serving {uri} (version {version.version}) on http://{host}:{port}/invocations", err=True)
    command = serve_command(uri, host, port, workers)
    training_range = TrainingRange.from_params_file(params) if params.is_file() else None
    os.execvpe(command[0], command, mlflow_environment(mlflow.get_tracking_uri(), serving_environment(workers, training_range)))


@app.command()
@one_line_errors
def validate(
    path: Annotated[Path, typer.Argument(help="Stamp set folder to validate.")],
    params: ParamsOption = Path("params.yaml"),
    name: Annotated[Optional[str], typer.Option(help="Report name (default: the folder name).")] = None,
    expectations: Annotated[Path, typer.Option(help="Folder of the suite JSON files.")] = Path("expectations"),
    reports: Annotated[Path, typer.Option(help="Where the JSON report and Data Docs go.")] = Path("reports/validation"),
    docs: Annotated[Optional[Path], typer.Option(help="Data Docs folder (default: <reports>/<name>_docs).")] = None,
    shift: Annotated[bool, typer.Option(help="Also check the domain shift against the training reference.")] = True,
    track: Annotated[bool, typer.Option(help="Log the result as the MLflow run validate-<name>.")] = True,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Validate a stamp set with Great Expectations: integrity and labels (hard gates), domain shift (warning)."""
    from legato.config import load_params
    from legato.errors import DataError

    if not path.is_dir():
        raise DataError(f"stamp set {path} does not exist")
    loaded = load_params(params)
    stamp_size = int((loaded.get("simulate") or {}).get("stamp_size", 64))
    from legato.validation.validate import log_validation, validate_set

    report = validate_set(path, expectations, stamp_size, name=name, reports_dir=reports, docs_dir=docs, check_shift=shift)
    if track:
        from legato.tracking import start_tracking, tracking_settings

        start_tracking(*tracking_settings(loaded, tracking_uri))
        log_validation(report)
    if report.get("shift_flagged"):
        typer.echo(f"warning: {report['name']}: domain shift against the simulated training set", err=True)
        typer.echo(f"  {'statistic':<22}{'median':>11}{'reference':>11}{'shift/sigma':>13}{'KL':>9}{'KL max':>9}  failed", err=True)
        for row in report["shift_table"]:
            typer.echo(
                f"  {row['statistic']:<22}{row['median']:>11.4g}{row['reference_median']:>11.4g}{row['median_shift_sigma']:>13.1f}"
                f"{(row['kl'] if row['kl'] is not None else float('nan')):>9.3f}{row['kl_threshold']:>9.3f}  {','.join(row['failed']) or '-'}",
                err=True,
            )
    if not report["passed"]:
        for line in report["failures"]:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(code=1)
    shift_note = "" if "shift_flagged" not in report else ("; domain shift flagged" if report["shift_flagged"] else "; no domain shift")
    typer.echo(f"{report['name']}: {report['n_stamps']} stamps passed integrity and label checks{shift_note} (report: {reports / (report['name'] + '.json')})")


@app.command("build-reference")
@one_line_errors
def build_reference_command(
    params: ParamsOption = Path("params.yaml"),
    train: Annotated[Path, typer.Option(help="Training set (the reference distribution).")] = Path("datasets/simulated/train"),
    calibration: Annotated[Path, typer.Option(help="Separate clean set (bootstrap thresholds).")] = Path("datasets/simulated/val"),
    out: Annotated[Path, typer.Option(help="Domain-shift suite to write.")] = Path("expectations/domain_shift.json"),
):
    """Compute the domain-shift suite (partitions, ranges, KL thresholds) from the simulated training set."""
    from legato.config import load_params
    from legato.errors import ConfigError, DataError

    settings = dict(load_params(params).get("validate") or {})
    for folder in (train, calibration):
        if not folder.is_dir():
            raise DataError(f"stamp set {folder} does not exist")
    try:
        batch, reference, boot = int(settings.get("batch_size", 1000)), int(settings.get("max_reference", 20000)), int(settings.get("n_bootstrap", 30))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad validate setting: {exc}") from None
    if min(batch, reference, boot) < 1:
        raise ConfigError("validate.batch_size, max_reference and n_bootstrap must be >= 1")
    from legato.validation.validate import build_reference

    suite = build_reference(train, calibration, out, batch_size=batch, max_reference=reference, n_boot=boot)
    typer.echo(f"wrote {out}: {len(suite['expectations'])} expectations on {len(suite['meta']['statistics'])} statistics, batches of {batch}")


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
    band: Annotated[str, typer.Option(help="F606W, F814W (ACS/WFC), F105W, F125W, F140W or F160W (WFC3/IR).")] = "F160W",
    out: Annotated[Optional[Path], typer.Option(help="PSF FITS file to write (default: data/psf/<instrument>_<band>_psf.fits).")] = None,
    size: Annotated[int, typer.Option(help="Image side in pixels (odd).")] = 51,
):
    """Write a band's model PSF image (sampled at 0.06", no output-pixel response; docs/data.md)."""
    from legato.simulation.psf import band_optics, write_psf_image

    path = write_psf_image(out or Path("data/psf") / band_optics(band).file_name, size=size, band=band)
    typer.echo(f"wrote {path}")


# catalogue inference at survey scale (src/legato/inference, docs/predict.md)
from legato.inference.command import predict as _predict_command  # noqa: E402

app.command("predict")(one_line_errors(_predict_command))


def main() -> None:  # pragma: no cover - console entry
    """Console entry point."""
    sys.exit(app())

from legato.training.production_command import train_production_command as _train_production  # noqa: E402

app.command("train-production")(one_line_errors(_train_production))

from legato.evaluation.production_command import evaluate_production_command as _evaluate_production  # noqa: E402

app.command("evaluate-production")(one_line_errors(_evaluate_production))


@app.command("track-estimator")
@one_line_errors
def track_estimator_command(
    estimator: Annotated[Path, typer.Argument(help="Published estimator folder (e.g. models/production, from dvc pull).")],
    out: Annotated[Path, typer.Option(help="Tracked copy (with run.json of this store).")],
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Give a published estimator a run and a logged model in this MLflow store (for evaluation, registry, serving)."""
    from legato.config import load_params
    from legato.registry.publish import track_estimator
    from legato.tracking import tracking_settings

    uri, experiment = tracking_settings(load_params(params), tracking_uri)
    summary = track_estimator(estimator, out, uri, experiment)
    how = "its training run" if summary["reused"] else "a new run"
    typer.echo(f"{estimator} -> {out}: {how} {summary['run_id']} ({summary['model_uri']})")

from legato.evaluation.crb_command import crb_command as _crb_command  # noqa: E402

app.command("crb")(one_line_errors(_crb_command))

from legato.evaluation.realism_command import realism_command as _realism_command  # noqa: E402

app.command("realism")(one_line_errors(_realism_command))

from legato.evaluation.truth_command import score_realistic_command as _score_realistic_command  # noqa: E402

app.command("score-realistic")(one_line_errors(_score_realistic_command))

from legato.fit_quality.command import inspect_command as _inspect_command  # noqa: E402

app.command("inspect")(one_line_errors(_inspect_command))

from legato.registry.history_command import export_command as _history_export  # noqa: E402
from legato.registry.history_command import import_command as _history_import  # noqa: E402
from legato.registry.history_command import where as _where  # noqa: E402

history_app = typer.Typer(help="Ship the MLflow runs and registry behind the published artifacts; recreate them in a store.", no_args_is_help=True)
app.add_typer(history_app, name="history")
history_app.command("export")(one_line_errors(_history_export))
history_app.command("import")(one_line_errors(_history_import))
app.command("where")(one_line_errors(_where))
