"""``legato predict``: Sérsic parameters of every stamp of a survey-sized input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.errors import ConfigError
from legato.registry.store import DEFAULT_MODEL_NAME

ENGINES = ("local", "spark")


def predict(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="FITS stamp cube; folder of FITS stamps; folder/file of Parquet stamp shards; or a mosaic (with --catalog).",
        ),
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Catalogue to write: .fits, .ecsv or .parquet (Spark: a Parquet folder).")],
    catalog: Annotated[Optional[Path], typer.Option(help="Source catalogue (RA/Dec or x/y columns): INPUT is then a mosaic image.")] = None,
    model: Annotated[str, typer.Option(help="Registry alias, version (3 or v3), models:/ URI, or a model/estimator folder.")] = "champion",
    model_name: Annotated[str, typer.Option(help="Registered model name for aliases and versions.")] = DEFAULT_MODEL_NAME,
    tracking_uri: Annotated[
        Optional[str], typer.Option(help="Tracking store (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
    ] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Catalogue id column (default: id/ID/NUMBER, else the row index).")] = None,
    ra: Annotated[str, typer.Option(help="Catalogue RA column, degrees.")] = "ra",
    dec: Annotated[str, typer.Option(help="Catalogue Dec column, degrees.")] = "dec",
    x: Annotated[str, typer.Option(help="Catalogue x column, pixels (used when RA/Dec or the WCS are missing).")] = "x",
    y: Annotated[str, typer.Option(help="Catalogue y column, pixels.")] = "y",
    pixel_origin: Annotated[int, typer.Option(help="Index of the first pixel in x/y: 1 (FITS, SExtractor) or 0.")] = 1,
    hdu: Annotated[Optional[str], typer.Option(help="HDU of the image/cube (index or name; default: automatic).")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Stamps per chunk (and per resumable part).")] = 4096,
    batch_size: Annotated[int, typer.Option(min=1, help="Stamps per forward pass.")] = 256,
    params: Annotated[
        Path, typer.Option(help="params.yaml giving the training range for OUT_OF_RANGE (no range check if missing).")
    ] = Path("params.yaml"),
    report: Annotated[Optional[Path], typer.Option(help="Also write the run report as JSON here.")] = None,
    engine: Annotated[str, typer.Option(help="local (streaming, resumable) or spark (mlflow spark_udf).")] = "local",
    master: Annotated[
        Optional[str],
        typer.Option(help="Spark master, e.g. local[2] or spark://host:7077 (default: local[2]; under spark-submit: its own)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    crb: Annotated[
        bool, typer.Option("--crb", help="Add the Cramér-Rao bound at each estimate (crb_* columns; ~40 ms per stamp per core).")
    ] = False,
    residuals: Annotated[
        bool,
        typer.Option(
            "--residuals",
            help="Add the goodness of fit of each estimate's model (chi2_nu, residual flux fraction, asymmetry; BAD_FIT flag).",
        ),
    ] = False,
    gallery: Annotated[
        Optional[Path], typer.Option(help="Also write a gallery (PNG and GALFIT-style blocks) of the worst-chi² and random rows here.")
    ] = None,
    band: Annotated[
        str,
        typer.Option(help="Band of the stamps (F606W, F814W, F105W, F125W, F140W, F160W): its zeropoint and model PSF."),
    ] = "F160W",
    psf: Annotated[
        Optional[Path],
        typer.Option(
            help=(
                "PSF image (FITS, 0.06\"/px, no output-pixel response) of the stamps, instead of the band's model PSF "
                "(data/psf/): the input of a PSF-conditioned estimator and of the --crb / --residuals models."
            )
        ),
    ] = None,
    zeropoint: Annotated[Optional[float], typer.Option(help="AB zeropoint of the stamps (default: the band's).")] = None,
    exposure_time: Annotated[
        Optional[float],
        typer.Option(
            min=0.0, help="Effective exposure time (s): the galaxy's Poisson noise in --crb / --residuals (default: sky noise only)."
        ),
    ] = None,
    chi2_threshold: Annotated[
        Optional[float],
        typer.Option(min=0.0, help="Reduced chi² above which --residuals flags BAD_FIT (default: params fit_quality.chi2_threshold)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes for --crb / --residuals.")] = 2,
    symmetries: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="Measure each stamp in this many of its 8 flips/rotations and average (8: the most precise, ~7x slower; docs/predict.md).",
        ),
    ] = 1,
    refit_brighter_than: Annotated[
        Optional[float],
        typer.Option(
            help=(
                "Refit stamps whose estimate is brighter than this AB magnitude, not BLENDED, with the exact PSF-convolved "
                "Sérsic model started from the estimate (maximum likelihood; reaches the Cramér-Rao bound; ~0.3 s per "
                "refitted stamp per core; give --exposure-time). Replaces their values and intervals; a refit column says "
                "which rows (docs/predict.md)."
            )
        ),
    ] = None,
    refit_blended: Annotated[
        bool,
        typer.Option(
            help=(
                "With --refit-brighter-than, refit BLENDED stamps too, the blend detector's neighbours masked: what a "
                "masked single-Sérsic fit (GALFIT's labels) measures there, closer to such labels but further from the "
                "simulated galaxies than the network (docs/predict.md)."
            )
        ),
    ] = False,
) -> None:
    """Predict mag, re_arcsec, n, q and ellipticity for every stamp of INPUT into a catalogue.

    Streams in chunks with bounded memory; an interrupted run resumes from the
    finished chunks (kept in OUTPUT.parts/) when rerun with the same arguments;
    the catalogue appears atomically at the end. See docs/predict.md.
    """
    from legato.flags import TrainingRange
    from legato.inference.writer import output_format
    from legato.registry.resolve import resolve_model

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    hdu_value = int(hdu) if hdu is not None and hdu.lstrip("-").isdigit() else hdu
    training_range = TrainingRange.from_params_file(params) if params.is_file() else None
    if training_range is None:
        typer.echo(f"note: {params} not found: no OUT_OF_RANGE check", err=True)

    if (crb or residuals or gallery or refit_brighter_than is not None) and engine == "spark":
        raise ConfigError("--crb, --residuals, --refit-brighter-than and --gallery run with the local engine only")
    if refit_blended and refit_brighter_than is None:
        raise ConfigError("--refit-blended refits with --refit-brighter-than MAG: give both")
    if gallery is not None and catalog is not None:
        raise ConfigError("--gallery draws from stamp inputs (cube, folder or Parquet); for a mosaic, cut the stamps first")
    if residuals and chi2_threshold is None:
        chi2_threshold = _chi2_threshold(params)
    if engine == "spark":  # paths stay strings: URIs such as s3a://bucket/key are Spark's to read
        if not output.lower().rstrip("/").endswith(".parquet"):
            raise ConfigError(f"the Spark engine writes a Parquet dataset: give an output ending in .parquet, not {output}")
        if catalog is not None:
            raise ConfigError("the Spark engine reads Parquet or FITS stamp shards; cut mosaics with the local engine")
        resolved = resolve_model(model, name=model_name, tracking_uri=tracking_uri)
        resolved.symmetries = symmetries
        if resolved.pyfunc_uri is None:
            raise ConfigError(f"the Spark engine needs an MLflow model (registry alias/version or an MLmodel folder), not {model}")
        from legato.models.estimator import manifest_psf_bands, read_manifest

        condition = stamp_psf(manifest_psf_bands(read_manifest(resolved.estimator_dir)), band, psf, zeropoint)
        from legato.inference.spark import predict_spark, spark_session

        session = spark_session(master or ("local[2]" if not _under_spark_submit() else None))
        try:
            summary = predict_spark(
                session,
                resolved.pyfunc_uri,
                input_path,
                output,
                training_range=training_range,
                params=request_params(condition),
                symmetries=symmetries,
            )
        finally:
            session.stop()
        summary.update(resolved.meta())
        _finish(summary, report)
        return

    input_path, output = Path(input_path), Path(output)
    output_format(output)  # unknown extension: one-line error before any work
    from legato.inference.predict import predict_catalogue
    from legato.io.stamp_inputs import open_source

    options = {"id_column": id_column, "ra": ra, "dec": dec, "x": x, "y": y, "pixel_origin": pixel_origin} if catalog else {}
    source = open_source(input_path, catalog=catalog, hdu=hdu_value, **options)
    resolved = resolve_model(model, name=model_name, tracking_uri=tracking_uri)
    resolved.symmetries = symmetries
    from legato.modelling.renderer import renderer_from_psf_file
    from legato.simulation.psf import band_psf_path

    loaded = resolved.load()
    condition = stamp_psf(loaded.psf_bands, band, psf, zeropoint)
    measured = crb or residuals or gallery or refit_brighter_than is not None
    renderer = renderer_from_psf_file(psf or band_psf_path(band), zeropoint=stamp_zeropoint(condition)) if measured else None
    augmentations = augmentations_for(renderer, crb, residuals, exposure_time, chi2_threshold, refit_brighter_than, refit_blended)
    from legato.inference.measurements import AugmentedEstimator

    estimator = AugmentedEstimator(loaded, augmentations, workers) if augmentations else loaded
    try:
        summary = predict_catalogue(
            source,
            resolved,
            output,
            chunk_size=chunk_size,
            batch_size=batch_size,
            training_range=training_range,
            progress=progress,
            estimator=estimator,
            psf=condition,
        )
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished chunks are kept in {output}.parts; rerun the same command to resume", err=True)
        raise typer.Exit(code=130) from None
    finally:
        if augmentations:
            estimator.close()
    if gallery is not None:
        from legato.modelling.inspect import inspect_catalogue

        shown = inspect_catalogue(output, input_path, gallery, renderer, worst=8, random=8, exposure_time=exposure_time)
        summary["gallery"] = shown["gallery"]
        typer.echo(f"gallery of {len(shown['ids'])} rows -> {shown['gallery']}", err=True)
    _finish(summary, report)


def stamp_psf(bands: dict | None, band: str, psf: Path | None, zeropoint: float | None):
    """The stamps' PSF condition for an estimator with training ``bands`` (None: no PSF input, F160W stamps).

    An estimator without a PSF input takes F160W stamps only; a ``--psf`` file then serves the
    ``--crb`` / ``--residuals`` models alone (a note says so). Only the manifest is read: no network is loaded.
    """
    from legato.models.psf_condition import resolve_psf

    if bands is None and psf is not None:
        typer.echo(f"note: this estimator takes no PSF input: {psf} is used by --crb / --residuals only", err=True)
        psf = None
    return resolve_psf(bands, band, psf, zeropoint)


def stamp_zeropoint(condition) -> float:
    """The stamps' AB zeropoint for the ``--crb`` / ``--residuals`` / refit models: the PSF condition's, else F160W's."""
    from legato.conventions import ZEROPOINT_AB

    return float(ZEROPOINT_AB["F160W"] if condition is None else condition.zeropoint)


def request_params(condition) -> dict | None:
    """The served model's request parameters of a PSF condition (:data:`legato.serving.pyfunc.PSF_PARAMS`)."""
    if condition is None:
        return None
    return {
        "band": condition.band,
        "zeropoint": condition.zeropoint,
        "psf_fwhm_arcsec": condition.fwhm_arcsec,
        "psf_r50_arcsec": condition.r50_arcsec,
    }


def augmentations_for(
    renderer,
    crb: bool,
    residuals: bool,
    exposure_time: float | None,
    chi2_threshold: float | None,
    refit_brighter_than: float | None = None,
    refit_blended: bool = False,
) -> list:
    """The per-stamp measurements ``--refit-brighter-than``, ``--crb`` and ``--residuals`` ask for (the refit first)."""
    from legato.inference.measurements import BoundAugmentation, RefitAugmentation, ResidualAugmentation

    exposure_time = exposure_time or None
    chosen = [] if refit_brighter_than is None else [RefitAugmentation(renderer, refit_brighter_than, exposure_time, blended=refit_blended)]
    if crb:
        chosen.append(BoundAugmentation(renderer, exposure_time))
    if residuals:
        chosen.append(ResidualAugmentation(renderer, chi2_threshold, exposure_time))
    return chosen


def _chi2_threshold(params: Path) -> float:
    from legato.config import load_params

    value = (load_params(params).get("fit_quality") or {}).get("chi2_threshold") if params.is_file() else None
    if value is None:
        raise ConfigError(f"--residuals needs a chi² threshold: give --chi2-threshold or fit_quality.chi2_threshold in {params}")
    return float(value)


def _under_spark_submit() -> bool:
    import os

    return "SPARK_ENV_LOADED" in os.environ or "PYSPARK_GATEWAY_PORT" in os.environ


def _finish(summary: dict, report: Path | None) -> None:
    rows = summary["rows"]
    flagged = ", ".join(f"{k}={v}" for k, v in summary["flag_counts"].items() if v) or "none"
    predicted = summary.get("predicted", rows - summary["flag_counts"].get("FAILED_VALIDATION", 0))
    line = f"{predicted}/{rows} stamps predicted -> {summary['output']} (flags: {flagged}"
    if summary.get("stamps_per_s"):
        line += f"; {summary['stamps_per_s']:.0f} stamps/s"
    typer.echo(line + ")")
    for problem in summary.get("problems", []):
        typer.echo(f"skipped {problem['file']}: {problem['error']}", err=True)
    if summary.get("problems"):
        typer.echo(f"{len(summary['problems'])} file(s) skipped", err=True)
    if report is not None:
        from legato.reports import write_json

        write_json(report, json.loads(json.dumps(summary, default=str)))
