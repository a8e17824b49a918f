"""``legato history export|import`` and ``legato where``: the MLflow history that travels with the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ParamsOption = Annotated[Path, typer.Option("--params", help="Parameter file (YAML).")]
TrackingOption = Annotated[
    Optional[str], typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, params.yaml, sqlite:///mlflow.db).")
]
DEFAULT_SOURCES = (Path("models"), Path("reports"))


def _settings(params: Path, tracking_uri: str | None) -> tuple[str | None, str]:
    from legato.config import load_params
    from legato.registry.store import DEFAULT_MODEL_NAME
    from legato.tracking import tracking_settings

    loaded = load_params(params)
    uri, _ = tracking_settings(loaded, tracking_uri)
    return uri, (loaded.get("registry") or {}).get("name", DEFAULT_MODEL_NAME)


def json_files(sources) -> list[Path]:
    """Every ``*.json`` under the given files or folders, sorted."""
    found: list[Path] = []
    for source in map(Path, sources):
        found.extend([source] if source.is_file() else sorted(source.rglob("*.json")))
    return found


def export_command(
    out: Annotated[Path, typer.Option(help="History folder to write.")] = Path("history"),
    sources: Annotated[
        Optional[list[Path]],
        typer.Option("--from", help="Files or folders whose JSON names the runs to export (default: models/ and reports/)."),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
):
    """Export the runs named by the published artifacts (with parents), their logged models and the registry."""
    from legato.registry.history import export_history, referenced_run_ids

    uri, model_name = _settings(params, tracking_uri)
    run_ids = referenced_run_ids(json_files(sources or DEFAULT_SOURCES))
    manifest = export_history(uri, run_ids, out, model_names=[model_name])
    versions = sum(len(m["versions"]) for m in manifest["registry"])
    typer.echo(
        f"exported {len(manifest['runs'])} runs, {len(manifest['models'])} logged models and {versions} versions of {model_name} to {out}"
    )
    if manifest["missing_runs"]:
        typer.echo(
            f"note: {len(manifest['missing_runs'])} referenced runs are not in this store: {', '.join(manifest['missing_runs'])}", err=True
        )


def import_command(
    history: Annotated[Path, typer.Argument(help="History folder written by legato history export.")] = Path("history"),
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
    store_uri: Annotated[
        Optional[str],
        typer.Option(
            help="With a tracking server (http://...) as the tracking URI: its database (its --backend-store-uri, "
            "e.g. postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow), where the runs are written with their ids; "
            "the artifacts go through the server."
        ),
    ] = None,
):
    """Recreate the shipped runs, logged models and registry in this store, with their ids (twice changes nothing)."""
    from legato.registry.history import import_history

    uri, _ = _settings(params, tracking_uri)
    summary = import_history(uri, history, store_uri=store_uri)
    typer.echo(
        f"runs: {summary['runs_created']} created, {summary['runs_present']} present; logged models: {summary['models_created']} created, "
        f"{summary['models_present']} present; registry versions created: {summary['versions_created']}"
        + (
            f"; registered models already here, left as they are: {', '.join(summary['registered_models_skipped'])}"
            if summary["registered_models_skipped"]
            else ""
        )
    )


def where(
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
):
    """Where things are: the champion, the reports, and the commands to browse runs and serve the model."""
    from legato.registry.store import registry_client, version_by_alias

    uri, model_name = _settings(params, tracking_uri)
    client = registry_client(uri)
    champion = version_by_alias(client, model_name, "champion")
    tags = champion.tags or {}
    typer.echo(
        f"champion: models:/{model_name}@champion = version {champion.version} ({tags.get('architecture', '?')}, "
        f"{tags.get('training_domain', '?')})"
    )
    typer.echo(
        "reports: reports/*.json (Table 1: reports/table1.json; Table 2: reports/table2.json; production: "
        "reports/production.json), figures in reports/figures/"
    )
    typer.echo(
        "runs: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000   (then http://127.0.0.1:5000)"
    )
    typer.echo("models: .venv/bin/legato models")
    typer.echo("serve: .venv/bin/legato serve --port 5001   (POST stamps to http://127.0.0.1:5001/invocations)")
    from legato.reports import regeneration_summary

    for line in regeneration_summary():
        typer.echo(f"regenerated: {line}")
