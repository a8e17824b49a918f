"""Serving the promoted model over HTTP: ``serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import AliasOption, ModelOption, ParamsOption, registry_settings


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

    from legato.flags import TrainingRange
    from legato.registry.store import DEFAULT_MODEL_NAME, version_by_alias
    from legato.serving.server import mlflow_environment, serve_command, serving_environment

    settings, client = registry_settings(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    version = version_by_alias(client, name, alias)
    uri = f"models:/{name}@{alias}"
    typer.echo(f"serving {uri} (version {version.version}) on http://{host}:{port}/invocations", err=True)
    command = serve_command(uri, host, port, workers)
    training_range = TrainingRange.from_params_file(params) if params.is_file() else None
    os.execvpe(command[0], command, mlflow_environment(mlflow.get_tracking_uri(), serving_environment(workers, training_range)))
