"""``legato evaluate-production``: the production estimator against its targets (reports/production.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def evaluate_production_command(
    params: Annotated[Path, typer.Option(help="Pipeline parameters (evaluate.subsets).")] = Path("params.yaml"),
    estimator: Annotated[Path, typer.Option(help="Production estimator folder.")] = Path("models/production"),
    noiseless: Annotated[Path, typer.Option(help="Noiseless test set (the Table 1 galaxies without noise).")] = Path(
        "datasets/noiseless/test"
    ),
    test: Annotated[Path, typer.Option(help="Table 1 test set.")] = Path("datasets/simulated/test"),
    real: Annotated[Optional[Path], typer.Option(help="Real GALFIT-labelled stamps (legato ingest galfit).")] = Path("datasets/real/uds"),
    classical: Annotated[Optional[Path], typer.Option(help="Classical fits of the test set with formal errors (*_err columns).")] = Path(
        "datasets/classical/test.fits"
    ),
    reports: Annotated[Path, typer.Option(help="Report folder (production.json, figures/).")] = Path("reports"),
    speed: Annotated[Optional[Path], typer.Option(help="Speed report to quote (benchmarks/speed.py).")] = Path("reports/speed.json"),
    max_stamps: Annotated[Optional[int], typer.Option(min=1, help="Score only the first stamps (toy runs).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
) -> None:
    """Score the production estimator: Table 1, noise robustness, uncertainty coverage, real stamps, targets."""
    from legato.config import load_params
    from legato.evaluation.noise_aware import evaluate_production
    from legato.reports import write_json
    from legato.tracking import tracking_settings

    loaded = load_params(params)
    limits = {k: float(v) for k, v in ((loaded.get("evaluate") or {}).get("subsets") or {"paper_h23": 23.0, "full_h245": 24.5}).items()}
    report = evaluate_production(estimator, noiseless, test, real, reports, limits, classical_catalogue=classical, max_stamps=max_stamps)
    if speed is not None and speed.is_file():
        report["speed"] = speed_targets(json.loads(speed.read_text()))
        report["targets"]["speed"] = report["speed"]["targets"]
    write_json(reports / "production.json", report)
    tracking_uri, experiment = tracking_settings(loaded, tracking_uri)
    log_report(estimator, report, tracking_uri, experiment)
    met = {name: _met(value) for name, value in report["targets"].items()}
    typer.echo("production targets: " + ", ".join(f"{k} {'met' if v else 'missed'}" for k, v in met.items()))


def speed_targets(speed: dict) -> dict:
    """The speed targets from a speed report (end-to-end predict rate with uncertainties, ratio to the classical fitter)."""
    production = speed.get("production") or {}
    rate = production.get("predict_end_to_end_stamps_per_s")
    ratio = production.get("speedup_vs_classical")
    return {
        "measured": production,
        "targets": {
            "end_to_end_stamps_per_s": {"value": rate, "target": 1500, "met": bool(rate and rate >= 1500)},
            "speedup_vs_classical": {"value": ratio, "target": 500, "met": bool(ratio and ratio >= 500)},
        },
    }


def _met(value) -> bool:
    if isinstance(value, dict):
        if "met" in value and isinstance(value["met"], bool):
            return value["met"]
        flags = [v for k, v in value.items() if k.endswith("met") and isinstance(v, bool)]
        nested = [_met(v) for v in value.values() if isinstance(v, dict)]
        return all(flags + nested) if flags or nested else False
    return bool(value)


def log_report(estimator: Path, report: dict, tracking_uri: str | None, experiment: str) -> None:
    """Log the headline numbers and the reliability figure to the estimator's MLflow run (if it has one here)."""
    import mlflow

    from legato.tracking import start_tracking

    run_file = Path(estimator) / "run.json"
    if not run_file.is_file():
        return
    start_tracking(tracking_uri, experiment)
    run_id = json.loads(run_file.read_text()).get("run_id")
    try:
        run = mlflow.start_run(run_id=run_id)
    except Exception:  # noqa: BLE001 - a published estimator's run lives in another store
        typer.echo(f"note: run {run_id} is not in this tracking store; report not logged to MLflow", err=True)
        return
    with run:
        metrics = {}
        for subset, values in report["table1_test"]["r2"].items():
            metrics.update({f"test_r2_{p}_{subset}": v for p, v in values.items()})
        for correlation, levels in report["depths"].items():
            for level, result in levels.items():
                metrics.update({f"{correlation}_{level}x_r2_{p}_paper_h23": v for p, v in result["r2"]["paper_h23"].items()})
                for interval, per_parameter in result["coverage"].items():
                    metrics.update({f"{correlation}_{level}x_coverage{interval}_{p}": v["all"] for p, v in per_parameter.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        mlflow.log_artifact(report["figure"], artifact_path="figures")
