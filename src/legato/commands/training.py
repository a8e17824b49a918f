"""Training the paper's networks and adapting them: ``train``, ``adapt``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import ParamsOption
from legato.reports import write_json


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


def adapt(
    params: ParamsOption = Path("params.yaml"),
    settings: Annotated[
        str, typer.Option("--section", help="params.yaml section of the settings: adapt, or a section whose keys override adapt's.")
    ] = "adapt",
    base: Annotated[Optional[Path], typer.Option(help="Simulation-trained estimator (default: params adapt.base).")] = None,
    test: Annotated[Path, typer.Option(help="Labelled test A.")] = Path("datasets/realistic/labelled/A"),
    pool: Annotated[Path, typer.Option(help="Labelled pool B.")] = Path("datasets/realistic/labelled/B"),
    out: Annotated[Optional[Path], typer.Option(help="Adapted estimator folder (default: params adapt.out).")] = None,
    reports: Annotated[Path, typer.Option(help="Reports folder (figure5.json, table2.json, plots, figures).")] = Path("reports"),
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Domain adaptation: the fine-tuning set-up chosen, then fine-tune versus from scratch over |B_i| and seeds (Figure 5) and Table 2."""
    from legato.config import load_params, section
    from legato.evaluation.adaptation import write_adaptation_reports
    from legato.io.stamps import load_split
    from legato.tracking import tracking_settings
    from legato.training.adapt import AdaptConfig, adaptation_curve, classical_versus_classical

    loaded = load_params(params)
    options = section(loaded, "adapt", settings)
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


def refine(
    params: ParamsOption = Path("params.yaml"),
    settings_section: Annotated[
        str, typer.Option("--section", help="params.yaml section of the settings: refine, or a section whose keys override refine's.")
    ] = "refine",
    base: Annotated[Optional[Path], typer.Option(help="Estimator to refine (default: params refine.base).")] = None,
    train: Annotated[Optional[Path], typer.Option(help="Noiseless set the stage learns from, made noisy (default: params).")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Noiseless set its intervals are calibrated on (default: params).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Refined estimator folder (default: params refine.out).")] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Use only this many training galaxies.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the run summary (JSON) here.")] = None,
):
    """Add the photometric second stage (curve of growth and moments) to an estimator (docs/production.md)."""
    from legato.config import load_params, section
    from legato.training.noisy_batches import DepthRange
    from legato.training.refine import train_refinement

    loaded = load_params(params)
    settings = section(loaded, "refine", settings_section)
    depths = settings.get("depths") or section(loaded, "production").get("depths") or {}
    summary = train_refinement(
        base or Path(settings["base"]),
        train or Path(settings["train"]),
        calibration or Path(settings["calibration"]),
        out or Path(settings["out"]),
        depths=DepthRange(**{k: tuple(v) for k, v in depths.items()}),
        copies=int(settings.get("copies", 2)),
        calibration_copies=int(settings.get("calibration_copies", 3)),
        seed=int(settings.get("seed", 0)),
        max_train=max_train if max_train is not None else settings.get("max_train"),
        max_shift_sigmas=settings.get("max_shift_sigmas"),
        bright=(float(settings["bright_mag"]), int(settings["bright_copies"])) if settings.get("bright_mag") is not None else None,
    )
    before, after = summary["val_r2_h23"]["base"], summary["val_r2_h23"]["refined"]
    typer.echo(
        f"refined estimator {summary['out']}: validation R2 (H <= 23) " + "  ".join(f"{p} {before[p]:.4f} -> {after[p]:.4f}" for p in after)
    )
    if report is not None:
        write_json(report, summary)
