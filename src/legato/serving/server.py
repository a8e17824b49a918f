"""Start and stop real MLflow processes (model server, tracking server) on loopback, by PID."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from legato.platform.process import LOOPBACK, ManagedProcess, free_port, http_ok

__all__ = [
    "LOOPBACK",
    "ManagedProcess",
    "free_port",
    "mlflow_environment",
    "model_server",
    "serve_command",
    "serving_environment",
    "tracking_command",
    "tracking_server",
]


def mlflow_environment(tracking_uri: str | None = None, extra: dict | None = None) -> dict:
    """The environment for an MLflow child: the interpreter's bin on PATH (``uvicorn``), the store, analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.update(extra or {})
    return env


def model_server(
    model_uri: str,
    port: int | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
    log_path=None,
    extra_env=None,
    training_range=None,
) -> ManagedProcess:
    """``mlflow models serve -m <model_uri> --env-manager local`` bound to 127.0.0.1.

    The environment is :func:`serving_environment` (``training_range`` for the
    ``OUT_OF_RANGE`` flag), then ``extra_env``.
    """
    port = port or free_port()
    command = serve_command(model_uri, LOOPBACK, port, workers)
    env = {**serving_environment(workers, training_range), **(extra_env or {})}
    return ManagedProcess(command, port, "/ping", mlflow_environment(tracking_uri, env), log_path)


def serving_environment(workers: int, training_range=None) -> dict[str, str]:
    """Settings of the model server's workers that the caller's environment does not already make.

    - ``TF_NUM_INTRAOP_THREADS``: the cores divided among the workers (``TF_NUM_INTEROP_THREADS`` 1),
      so that workers do not oversubscribe the CPU; ``OPENBLAS_NUM_THREADS`` and ``OMP_NUM_THREADS``
      the same for NumPy's BLAS (a refined estimator's curve of growth is a matrix product: with a
      BLAS thread per core in every worker, 8 clients served 31% fewer stamps/s);
    - ``SERVING_MODEL_CONFIG``: MLflow's serving-time model configuration, here the
      ``training_range`` (:class:`~legato.flags.TrainingRange`) of the
      ``OUT_OF_RANGE`` flag, as ``legato predict --params`` uses it.
    """
    cores = os.cpu_count() or 1
    per_worker = str(max(1, cores // max(1, workers)))
    env = {
        "TF_NUM_INTRAOP_THREADS": per_worker,
        "TF_NUM_INTEROP_THREADS": "1",
        "OPENBLAS_NUM_THREADS": per_worker,
        "OMP_NUM_THREADS": per_worker,
    }
    if training_range is not None:
        env["SERVING_MODEL_CONFIG"] = json.dumps({"training_range": training_range.as_meta()})
    return {key: value for key, value in env.items() if key not in os.environ}


def serve_command(model_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow models serve --env-manager local`` command line for a model URI."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(workers),
    ]


def tracking_command(
    backend_store_uri: str,
    artifact_root: str | Path,
    host: str = LOOPBACK,
    port: int = 5000,
    workers: int = 1,
    serve_artifacts: bool = False,
) -> list[str]:
    """The ``mlflow server`` command line over a store.

    Parameters
    ----------
    backend_store_uri : str
        The runs' and registry's store (``sqlite:///...``, ``postgresql+psycopg://...``).
    artifact_root : str or Path
        A local folder (or an artifact-store URI such as ``s3://bucket/path``).
    host, port : str, int
        Where the server listens.
    workers : int
        Server worker processes.
    serve_artifacts : bool
        True: the server stores artifacts under ``artifact_root`` and new experiments
        get ``mlflow-artifacts:/`` locations, so clients on other machines upload and
        download through the server's HTTP API (``--artifacts-destination``).
        False: new experiments get ``artifact_root`` itself, which every client
        writes directly (a folder only this machine sees; ``--default-artifact-root``).
    """
    root = artifact_root if "://" in str(artifact_root) else Path(artifact_root).resolve().as_uri()
    storage = ["--serve-artifacts", "--artifacts-destination", root] if serve_artifacts else ["--default-artifact-root", root]
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        *storage,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def tracking_server(
    backend_store_uri: str,
    artifact_root: str | Path,
    port: int | None = None,
    log_path=None,
    workers: int = 1,
    serve_artifacts: bool = False,
    host: str = LOOPBACK,
) -> ManagedProcess:
    """``mlflow server`` (the UI and REST API) over the given store, on 127.0.0.1 unless ``host`` says otherwise.

    See :func:`tracking_command` for the parameters; ready once ``/health`` answers
    (asked on 127.0.0.1 when the server listens on every interface).
    """
    port = port or free_port()
    command = tracking_command(backend_store_uri, artifact_root, host, port, workers, serve_artifacts)
    asked = LOOPBACK if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    return ManagedProcess(command, port, "/health", mlflow_environment(), log_path, ready=lambda: http_ok(f"http://{asked}:{port}/health"))
