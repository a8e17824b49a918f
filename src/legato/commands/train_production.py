"""``legato train-production``: the resumable production training, then its finalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def train_production_command(
    params: Annotated[Path, typer.Option(help="Pipeline parameters (the production section).")] = Path("params.yaml"),
    section: Annotated[
        str,
        typer.Option(
            help=(
                "Section of the parameters holding the recipe: production (isolated galaxies, F160W) or scenes (crowded "
                "stamps, every band, PSF input)."
            )
        ),
    ] = "production",
    data: Annotated[Path, typer.Option(help="Noiseless set (train/ and val/ inside): legato simulate --noiseless.")] = Path(
        "datasets/noiseless"
    ),
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder: a rerun continues from it.")] = Path("checkpoints/production"),
    out: Annotated[Path, typer.Option(help="Estimator folder written when every step is done.")] = Path("models/production"),
    steps: Annotated[Optional[int], typer.Option(min=1, help="Optimizer steps in all (overrides params.yaml).")] = None,
    max_minutes: Annotated[
        Optional[float], typer.Option(min=0, help="Stop after this many minutes (a checkpoint is written); rerun to continue.")
    ] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here once the estimator is finalised.")] = None,
) -> None:
    """Train the production estimator (noise-aware, with uncertainties); resumable from its checkpoint.

    Exits 0 with "checkpoint written" when --max-minutes ends the call early (rerun to
    continue), and finalises the estimator (calibrated uncertainties, input range, model
    card, MLflow model) into OUT once every step is done.
    """
    from legato.config import load_params
    from legato.reports import write_json
    from legato.tracking import tracking_settings
    from legato.training.noise_aware import ProductionConfig, train_production

    loaded = load_params(params)
    if section not in loaded:
        from legato.errors import ConfigError

        raise ConfigError(f"params file {params} has no section {section!r}")
    config = ProductionConfig.from_params(loaded, {"steps": steps}, section=section)
    tracking_uri, experiment = tracking_settings(loaded, tracking_uri)
    progress = train_production(
        config,
        data,
        checkpoint,
        max_seconds=None if max_minutes is None else 60.0 * max_minutes,
        tracking_uri=tracking_uri,
        experiment=experiment,
        log=lambda line: typer.echo(line, err=True),
    )
    if not progress["finished"]:
        typer.echo(f"checkpoint written at step {progress['step']} of {progress['steps']} in {checkpoint}: rerun to continue")
        return
    from legato.training.noise_aware_finalize import finalize_production

    summary = finalize_production(config, data, checkpoint, out, progress, tracking_uri=tracking_uri, experiment=experiment)
    typer.echo(f"production estimator written to {out} (run {summary['run_id']})")
    if report is not None:
        write_json(report, summary)
