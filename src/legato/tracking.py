"""MLflow set-up shared by every command: tracking store, experiment, provenance tags.

Embedded default: an SQLite store ``mlflow.db`` and the artifact root
``mlruns/``, both at the project root. ``MLFLOW_TRACKING_URI`` (or the
``mlflow.tracking_uri`` parameter) points elsewhere, e.g. an ``mlflow server``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from legato.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "legato"
DEFAULT_ARTIFACT_ROOT = "mlruns"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: argument, then ``MLFLOW_TRACKING_URI``, then the SQLite default.

    Relative SQLite paths are made absolute, so runs inside ``dvc exp run --temp``
    copies still log to the project's store.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def is_tracking_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (``http://``, ``https://``) rather than a store this process opens."""
    return uri.split(":", 1)[0].lower() in ("http", "https")


def tracking_settings(params: dict, cli_uri: str | None = None) -> tuple[str | None, str]:
    """Tracking URI and experiment name: command line, then ``MLFLOW_TRACKING_URI``, then params.yaml."""
    settings = params.get("mlflow") or {}
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri")
    return uri, settings.get("experiment", DEFAULT_EXPERIMENT)


def start_tracking(
    tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, artifact_root: str | Path = DEFAULT_ARTIFACT_ROOT
):
    """Point MLflow at the store and return the experiment id (created with a local artifact root if new).

    On a tracking server (``http://...``) a new experiment takes the server's
    artifact location instead (``mlflow-artifacts:/`` when it serves artifacts),
    so that runs logged from any machine keep their artifacts where every client
    can read them.

    Raises
    ------
    ConfigError
        If the tracking store cannot be reached.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        elif is_tracking_server(uri):  # the server chooses the location and serves the artifacts to every client
            experiment_id = mlflow.create_experiment(experiment)
        else:
            root = Path(artifact_root).resolve()
            root.mkdir(parents=True, exist_ok=True)
            experiment_id = mlflow.create_experiment(experiment, artifact_location=root.as_uri())
    except MlflowException as exc:
        raise ConfigError(f"cannot use MLflow tracking store {uri}: {str(exc).splitlines()[0]}") from None
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_revision(repo: str | Path = ".") -> str:
    """Current git commit, suffixed ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def dvc_output_hash(path: str, lock_file: str | Path = "dvc.lock") -> str:
    """The md5 DVC recorded for a pipeline output (the data version), or ``unknown``."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return "unknown"
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return str(out.get("md5", "unknown"))
    return "unknown"


def training_domain(recipe: dict) -> str:
    """The ``training_domain`` tag of a production recipe's runs and versions (``recipe``: its plain values)."""
    if recipe.get("routes"):  # a routed estimator (legato.models.routing): each stamp measured by one of two
        return "routed"
    if recipe.get("deblend"):  # a deblended estimator (legato.models.deblending): its base's domain, shown stamps without neighbours
        return f"{recipe.get('base_domain', 'sim-noise-range')}+deblended"
    if recipe.get("base"):  # a refined estimator (legato.models.refinement): its base's domain, plus the second stage
        return f"{recipe.get('base_domain', 'sim-noise-range')}+refined"
    return "sim-scenes-every-band" if recipe.get("scenes") else "sim-noise-range"


def provenance_tags(data_path: str) -> dict[str, str]:
    """Tags every run carries: git revision and the DVC version of its data."""
    return {"git_revision": git_revision(), "data_path": data_path, "data_version": dvc_output_hash(data_path)}
