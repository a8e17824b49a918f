"""Scoring estimators: ``evaluate`` (Table 1, Figure 3), ``real-check`` (real GALFIT galaxies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import ParamsOption
from legato.options import parse_mapping
from legato.reports import write_json


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
        test,
        estimators,
        catalogues,
        settings["subsets"],
        settings["mag_bins"],
        reports_dir=reports,
        validation_report=validation,
        crb=crb,
        fit_quality=fit_quality_settings(loaded),
    )
    for method in [*estimators, *catalogues]:
        row = table1[method]
        typer.echo(f"{method:>10} (H <= 23)  R2 " + "  ".join(f"{p} {v:.4f}" for p, v in row.items()))
    if "limit" in table1:
        typer.echo(f"{'limit':>10} (H <= 23)  R2 " + "  ".join(f"{p} {v:.4f}" for p, v in table1["limit"].items()))


def fit_quality_settings(loaded: dict) -> dict | None:
    """Goodness-of-fit settings of the evaluation (PSF of the simulator, BAD_FIT threshold), if params give both."""
    psf = (loaded.get("simulate") or {}).get("psf")
    threshold = (loaded.get("fit_quality") or {}).get("chi2_threshold")
    return {"psf": psf, "chi2_threshold": float(threshold)} if psf and threshold is not None else None


def real_check_command(
    estimator: Annotated[list[str], typer.Option(help="NAME=FOLDER of an estimator to score (repeatable).")],
    real: Annotated[Path, typer.Option(help="Ingested real stamps with GALFIT labels (legato ingest galfit).")] = Path("datasets/real/uds"),
    report: Annotated[Path, typer.Option(help="The real-check report (JSON).")] = Path("reports/real_check.json"),
    other_band: Annotated[
        Optional[list[Path]],
        typer.Option(
            help=(
                "Ingested real stamps of the same galaxies in another band (e.g. the F125W blocks; repeatable): scored by the "
                "PSF-conditioned estimators with that band's PSF, with each galaxy's size ratio and colour against --real's."
            )
        ),
    ] = None,
):
    """Estimators on real galaxies against their GALFIT labels, galaxy by galaxy with the flags (reported, never tuned on)."""
    from legato.errors import ConfigError
    from legato.evaluation.real_check import band_pairs, real_check

    named = dict(item.split("=", 1) for item in estimator if "=" in item)
    if len(named) != len(estimator):
        raise ConfigError(f"--estimator takes NAME=FOLDER, got {estimator}")
    missing = [folder for folder in named.values() if not Path(folder).is_dir()]
    if missing:
        raise ConfigError(f"no estimator folder {', '.join(missing)}")
    if not real.is_dir():
        raise ConfigError(f"real stamp set {real} not found: run legato ingest galfit first")
    summary = real_check(named, real)
    for folder in other_band or []:
        if not folder.is_dir():
            raise ConfigError(f"real stamp set {folder} not found: run legato ingest galfit first")
        scored = real_check(named, folder)
        summary.setdefault("other_bands", {})[scored["band"]] = scored
        summary.setdefault("band_pairs", {})[scored["band"]] = band_pairs(summary, scored)
    write_json(report, summary)
    for name, scores in summary["estimators"].items():
        typer.echo(
            f"{name}: median Δmag (GALFIT - estimate) {scores['median_error_check_sample']['mag']} on the "
            f"{summary['n_check_sample']} galaxies of the check sample, "
            f"{scores['median_error_check_sample_uncut']['mag']} on the {summary['n_check_sample_uncut']} not cut by a no-data band"
        )
