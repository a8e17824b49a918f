"""The MLflow history of the published artifacts, shipped with the repository and recreated in any store.

A fresh clone pulls the trained networks, catalogues and reports from the DVC
remote; without their runs, ``mlflow ui`` would be empty and the registry
would have no champion. :func:`export_history` writes the runs behind the
published artifacts (parameters, per-step metric histories, tags, artifacts),
their logged models and the registry (versions, tags, aliases) to a folder;
:func:`import_history` recreates them in another tracking store.

Run ids and logged-model ids are kept, so every ``run.json`` and report that
names a run stays valid in the new store. MLflow's client API cannot choose
an id; on an SQL-backed store (the project's SQLite default, or PostgreSQL)
the import hands the store the original id at creation (:func:`preserved_id`),
a mechanism pinned to the MLflow version in ``requirements.lock`` and checked
on every run it creates: if a future MLflow ignores it, the import stops with
a clear error instead of writing a store whose ids do not match.

A shared tracking server (``http://...``) cannot be handed an id over its REST
API, so an import onto one writes the records straight into the server's
database (``store_uri``, reachable where the server runs) and sends the
artifacts through the server (``mlflow-artifacts:/`` locations), which then
serves both to every client.

Layout of a history folder::

    manifest.json                      MLflow version, experiment, run and model ids, registry
    runs/<run_id>/run.json             name, status, times, params, tags, metric histories, outputs
    runs/<run_id>/artifacts/...        the run's artifacts
    models/<model_id>/model.json       name, source run, tags, params, type, status
    models/<model_id>/artifacts/...    the logged model (MLmodel, code, estimator)
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import uuid
from pathlib import Path

from legato.errors import ConfigError, LegatoError
from legato.io.folders import publish_folder

FORMAT_VERSION = 1
RUN_ID_KEYS = ("run_id", "parent_run_id", "original_run_id")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
PARENT_TAG = "mlflow.parentRunId"
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
BATCH = 500


def referenced_run_ids(paths) -> set[str]:
    """Run ids named in JSON files (``run_id``, ``parent_run_id``, ``original_run_id`` at any depth).

    Parameters
    ----------
    paths : iterable of str or Path
        JSON files (run summaries, reports); missing or unreadable ones are skipped.
    """
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in RUN_ID_KEYS and isinstance(value, str) and RUN_ID.match(value):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in paths:
        try:
            walk(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            continue
    return found


def export_history(tracking_uri: str | None, run_ids, out_dir: str | Path, model_names=()) -> dict:
    """Write the runs ``run_ids`` (with their parents), their logged models and registered models to ``out_dir``.

    Parameters
    ----------
    tracking_uri : str or None
        The source store (default: ``MLFLOW_TRACKING_URI`` or the SQLite default).
    run_ids : iterable of str
        Runs to export; ids absent from the store are listed under ``missing``.
    out_dir : str or Path
        Folder to (re)write.
    model_names : iterable of str
        Registered models to export with all their versions (their runs are added).

    Returns
    -------
    dict
        The manifest written to ``out_dir/manifest.json``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from legato.registry.store import registry_client

    _quiet_artifact_transfers()
    client = registry_client(tracking_uri)
    tracking_uri = mlflow.get_tracking_uri()
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    registry = [_registered_model_record(client, name) for name in model_names]
    pending = set(run_ids) | {v["run_id"] for model in registry for v in model["versions"] if v["run_id"]}
    runs, missing, done = [], [], set()
    while pending:
        run_id = pending.pop()
        done.add(run_id)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            missing.append(run_id)
            continue
        parent = run.data.tags.get(PARENT_TAG)
        if parent and parent not in done:
            pending.add(parent)
        runs.append(run)
    experiments = {}
    models = []
    for run in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        experiment_id = run.info.experiment_id
        experiments.setdefault(experiment_id, client.get_experiment(experiment_id).name)
        folder = staging / "runs" / run.info.run_id
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(_run_record(client, run, experiments[experiment_id]), indent=1, sort_keys=True))
        if client.list_artifacts(run.info.run_id):
            _download(folder / "artifacts", run_id=run.info.run_id, tracking_uri=tracking_uri)
        for logged in _logged_models(client, run):
            target = staging / "models" / logged.model_id
            target.mkdir(parents=True)
            (target / "model.json").write_text(json.dumps(_model_record(logged, experiments[experiment_id]), indent=1, sort_keys=True))
            _download(target / "artifacts", artifact_uri=logged.artifact_location)
            models.append(logged.model_id)
    manifest = {
        "format": FORMAT_VERSION,
        "mlflow_version": mlflow.__version__,
        "experiments": sorted(set(experiments.values())),
        "runs": [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))],
        "models": models,
        "registry": registry,
        "missing_runs": sorted(missing),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    publish_folder(staging, out_dir)
    return manifest


def import_history(
    tracking_uri: str | None, history_dir: str | Path, artifact_root: str | Path = "mlruns", store_uri: str | None = None
) -> dict:
    """Recreate an exported history in a tracking store, keeping run and model ids.

    Runs and models already in the store are left alone, so importing twice
    changes nothing. A registered model that already exists is not touched
    (its version numbers could not match); it is reported as skipped.

    Parameters
    ----------
    tracking_uri : str or None
        The target store, SQL-backed (default: ``MLFLOW_TRACKING_URI`` or the SQLite default, created if absent),
        or a tracking server (``http://``, ``https://``) whose database is ``store_uri``.
    history_dir : str or Path
        A folder written by :func:`export_history`.
    artifact_root : str or Path
        Artifact root of experiments the import creates in an SQL store (a server chooses its own).
    store_uri : str, optional
        With a tracking server: its backend store (``postgresql+psycopg://...``), where the runs are written.

    Returns
    -------
    dict
        Counts of runs, models and registry versions created and already present.

    Raises
    ------
    ConfigError
        When the folder is not a history or the store cannot keep ids.
    """
    history_dir = Path(history_dir)
    manifest_path = history_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{history_dir} is not an MLflow history (manifest.json missing): dvc pull export_history")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{manifest_path}: history format {manifest.get('format')!r}, this legato reads {FORMAT_VERSION}")
    from mlflow import MlflowClient

    from legato.registry.store import registry_client
    from legato.tracking import resolve_tracking_uri

    store, server = _import_target(resolve_tracking_uri(tracking_uri), store_uri)
    client = registry_client(store, must_exist=False)
    _quiet_artifact_transfers()
    summary = {
        "runs_created": 0,
        "runs_present": 0,
        "models_created": 0,
        "models_present": 0,
        "versions_created": 0,
        "registered_models_skipped": [],
    }
    creator = client if server is None else MlflowClient(tracking_uri=server)
    experiment_ids = {name: _experiment_id(creator, name, artifact_root if server is None else None) for name in manifest["experiments"]}
    for name, experiment_id in experiment_ids.items():
        location = client.get_experiment(experiment_id).artifact_location
        if server is None and location.startswith("mlflow-artifacts:"):
            raise ConfigError(
                f"experiment {name!r} keeps its artifacts on a tracking server ({location}): import through it, "
                "--tracking-uri http://<the server> --store-uri <this database>"
            )
    records = {run_id: json.loads((history_dir / "runs" / run_id / "run.json").read_text()) for run_id in manifest["runs"]}
    model_records = {
        model_id: json.loads((history_dir / "models" / model_id / "model.json").read_text()) for model_id in manifest["models"]
    }
    models_by_run: dict[str, list[str]] = {}
    for model_id, model in model_records.items():
        models_by_run.setdefault(model["source_run_id"], []).append(model_id)
    for run_id in manifest["runs"]:
        record = records[run_id]
        if _exists(client.get_run, run_id):
            summary["runs_present"] += 1
        else:
            _create_run(client, record, experiment_ids[record["experiment"]], history_dir / "runs" / run_id / "artifacts", server)
            summary["runs_created"] += 1
        for model_id in models_by_run.get(run_id, []):
            model = model_records[model_id]
            if _exists(client.get_logged_model, model_id):
                summary["models_present"] += 1
                continue
            _create_logged_model(
                client, model, experiment_ids[model["experiment"]], history_dir / "models" / model_id / "artifacts", server
            )
            summary["models_created"] += 1
        if record["outputs"]:
            _link_outputs(client, run_id, record["outputs"])
    for model in manifest["registry"]:
        if _exists(client.get_registered_model, model["name"]):
            summary["registered_models_skipped"].append(model["name"])
            continue
        summary["versions_created"] += _create_registered_model(client, model)
    return summary


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def _import_target(uri: str, store_uri: str | None) -> tuple[str, str | None]:
    """The SQL store the records go to, and the server the artifacts go through (None: straight to the store's locations).

    Raises
    ------
    ConfigError
        When the records could not keep their ids there.
    """
    from legato.tracking import is_tracking_server

    if is_tracking_server(uri):
        if not store_uri:
            raise ConfigError(
                f"{uri} is a tracking server, whose REST API cannot keep run ids: give its SQL-backed store too "
                "(--store-uri postgresql+psycopg://..., the server's --backend-store-uri; run the import where that database is reachable)"
            )
        if _scheme(store_uri) not in SQL_SCHEMES:
            raise ConfigError(f"--store-uri must be the server's SQL database (postgresql+psycopg://...), not {store_uri}")
        return store_uri, uri
    if _scheme(uri) not in SQL_SCHEMES:
        raise ConfigError(
            f"the history keeps run ids and needs an SQL-backed tracking store (sqlite:///..., postgresql+psycopg://...) "
            f"or a tracking server with its database, not {uri}"
        )
    if store_uri and store_uri != uri:
        raise ConfigError("--store-uri goes with a tracking server (http://...) as the tracking URI")
    return uri, None


def _upload(artifact_uri: str, local_dir: Path, server: str | None) -> None:
    """Log the files of ``local_dir`` at the root of ``artifact_uri`` (``mlflow-artifacts:/`` ones through ``server``)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(artifact_uri, tracking_uri=server).log_artifacts(str(local_dir))


def _quiet_artifact_transfers() -> None:
    """No per-file progress bars from MLflow's artifact transfers (unless the caller asked for them)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _download(target: Path, **where) -> None:
    """Download an artifact tree (``run_id=`` or ``artifact_uri=``) so that its root becomes ``target``."""
    import mlflow

    scratch = target.with_name(target.name + ".download")
    scratch.mkdir(parents=True)
    root = Path(mlflow.artifacts.download_artifacts(dst_path=str(scratch), **where))
    root.rename(target)
    shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def preserved_id(hex_id: str):
    """Make the SQL tracking store give the next run or logged model it creates the id ``hex_id``.

    The store draws ids from ``uuid.uuid4()`` of its own module; for the
    duration of the block, the first draw returns ``hex_id`` and later ones
    are random again. Callers check the id they got (:func:`_check_id`).
    """
    from mlflow.store.tracking import sqlalchemy_store

    queue = [uuid.UUID(hex=hex_id)]

    class _Draw:
        def __getattr__(self, name):
            return getattr(uuid, name)

        @staticmethod
        def uuid4():
            return queue.pop() if queue else uuid.uuid4()

    original = sqlalchemy_store.uuid
    sqlalchemy_store.uuid = _Draw()
    try:
        yield
    finally:
        sqlalchemy_store.uuid = original


def _check_id(wanted: str, got: str, what: str) -> None:
    _forget_artifact_repository(got)
    if got != wanted:
        raise LegatoError(
            f"this MLflow store gave the imported {what} the id {got}, not {wanted}: the id-keeping import "
            "does not work with this MLflow version (see requirements.lock)"
        )


def _forget_artifact_repository(resource_id: str) -> None:
    """Drop MLflow's per-process cache entry for an id: the same id may name a run of another store in this process."""
    try:
        from mlflow.tracking._tracking_service import utils
    except ImportError:
        return
    getattr(utils, "_artifact_repos_cache", {}).pop(resource_id, None)


def _exists(getter, key) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return getter(key) is not None
    except MlflowException:
        return False


def _experiment_id(client, name: str, artifact_root) -> str:
    """The experiment ``name``, created if absent with ``artifact_root`` (None: the store's or server's default)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if artifact_root is None:
        return client.create_experiment(name)
    root = Path(artifact_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=root.as_uri())


def _run_record(client, run, experiment: str) -> dict:
    histories = {}
    for key in sorted(run.data.metrics):
        histories[key] = [[m.step, m.timestamp, m.value] for m in client.get_metric_history(run.info.run_id, key)]
    outputs = [[o.model_id, o.step] for o in ((run.outputs.model_outputs if run.outputs else None) or [])]
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": experiment,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
        "metrics": histories,
        "outputs": outputs,
    }


def _logged_models(client, run) -> list:
    found, token = [], None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'", page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda m: m.creation_timestamp)


def _model_record(logged, experiment: str) -> dict:
    status = logged.status.name if hasattr(logged.status, "name") else str(logged.status)
    return {
        "model_id": logged.model_id,
        "name": logged.name,
        "experiment": experiment,
        "source_run_id": logged.source_run_id,
        "tags": dict(logged.tags or {}),
        "params": dict(logged.params or {}),
        "model_type": logged.model_type,
        "status": status,
    }


def _registered_model_record(client, name: str) -> dict:
    from legato.registry.store import all_versions, get_model

    model = get_model(client, name)
    versions = []
    for version in all_versions(client, name):
        versions.append(
            {
                "version": int(version.version),
                "source": version.source,
                "run_id": version.run_id,
                "model_id": getattr(version, "model_id", None),
                "tags": dict(version.tags or {}),
                "description": version.description or "",
                "aliases": sorted(version.aliases or []),
            }
        )
    return {"name": name, "description": model.description or "", "tags": dict(model.tags or {}), "versions": versions}


def _create_run(client, record: dict, experiment_id: str, artifacts: Path, server: str | None = None) -> None:
    from mlflow.entities import Metric, Param

    with preserved_id(record["run_id"]):
        run = client.create_run(experiment_id, start_time=record["start_time"], tags=record["tags"], run_name=record["run_name"])
    _check_id(record["run_id"], run.info.run_id, "run")
    params = [Param(key, value) for key, value in record["params"].items()]
    metrics = [Metric(key, value, timestamp, step) for key, points in record["metrics"].items() for step, timestamp, value in points]
    for start in range(0, max(len(params), len(metrics)), BATCH):
        client.log_batch(run.info.run_id, metrics=metrics[start : start + BATCH], params=params[start : start + BATCH])
    if artifacts.is_dir():
        _upload(run.info.artifact_uri, artifacts, server)
    if record["status"] != "RUNNING":
        client.set_terminated(run.info.run_id, record["status"], record["end_time"])


def _create_logged_model(client, record: dict, experiment_id: str, artifacts: Path, server: str | None = None) -> None:
    with preserved_id(record["model_id"].removeprefix("m-")):
        logged = client.create_logged_model(
            experiment_id,
            name=record["name"],
            source_run_id=record["source_run_id"],
            tags=record["tags"] or None,
            params=record["params"] or None,
            model_type=record["model_type"],
        )
    _check_id(record["model_id"], logged.model_id, "logged model")
    _upload(logged.artifact_location, artifacts, server)
    client.finalize_logged_model(logged.model_id, "READY" if record["status"] == "READY" else "FAILED")


def _link_outputs(client, run_id: str, outputs: list) -> None:
    from mlflow.entities import LoggedModelOutput

    run_outputs = client.get_run(run_id).outputs
    linked = {o.model_id for o in ((run_outputs.model_outputs if run_outputs else None) or [])}
    missing = [
        LoggedModelOutput(model_id, step)
        for model_id, step in outputs
        if model_id not in linked and _exists(client.get_logged_model, model_id)
    ]
    if missing:
        client.log_outputs(run_id, missing)


def _create_registered_model(client, record: dict) -> int:
    client.create_registered_model(record["name"], tags=record["tags"] or None, description=record["description"] or None)
    created, expected = 0, 1
    for version in sorted(record["versions"], key=lambda v: v["version"]):
        while expected < version["version"]:  # a version deleted before the export: its number stays taken
            gap = client.create_model_version(record["name"], version["source"], run_id=version["run_id"], model_id=version["model_id"])
            client.delete_model_version(record["name"], gap.version)
            expected = int(gap.version) + 1
        made = client.create_model_version(
            record["name"],
            version["source"],
            run_id=version["run_id"],
            tags=version["tags"] or None,
            description=version["description"] or None,
            model_id=version["model_id"],
        )
        if int(made.version) != version["version"]:
            raise LegatoError(f"registry import of {record['name']}: got version {made.version} for exported version {version['version']}")
        for alias in version["aliases"]:
            client.set_registered_model_alias(record["name"], alias, made.version)
        created, expected = created + 1, int(made.version) + 1
    return created
