"""Great Expectations checks of stamp sets: ``validate``, ``build-reference``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import ParamsOption


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
                f"{(row['kl'] if row['kl'] is not None else float('nan')):>9.3f}{row['kl_threshold']:>9.3f}  "
                f"{','.join(row['failed']) or '-'}",
                err=True,
            )
    if not report["passed"]:
        for line in report["failures"]:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(code=1)
    shift_note = "" if "shift_flagged" not in report else ("; domain shift flagged" if report["shift_flagged"] else "; no domain shift")
    typer.echo(
        f"{report['name']}: {report['n_stamps']} stamps passed integrity and label checks{shift_note} "
        f"(report: {reports / (report['name'] + '.json')})"
    )


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
        batch, reference, boot = (
            int(settings.get("batch_size", 1000)),
            int(settings.get("max_reference", 20000)),
            int(settings.get("n_bootstrap", 30)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad validate setting: {exc}") from None
    if min(batch, reference, boot) < 1:
        raise ConfigError("validate.batch_size, max_reference and n_bootstrap must be >= 1")
    from legato.validation.validate import build_reference

    suite = build_reference(train, calibration, out, batch_size=batch, max_reference=reference, n_boot=boot)
    typer.echo(
        f"wrote {out}: {len(suite['expectations'])} expectations on {len(suite['meta']['statistics'])} statistics, batches of {batch}"
    )
