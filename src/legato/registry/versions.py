"""Registering trained estimators as versions of one registered model, tagged with their provenance."""

from __future__ import annotations

import json
from pathlib import Path

from legato.columns import PARAMETERS
from legato.errors import ConfigError

TAG_KEYS = (
    "architecture",
    "training_domain",
    "method",
    "data_version",
    "data_path",
    "git_revision",
    "validation",
    "adapted_from_model_uri",
    "finetuning_setup",
)


def gate_metric(parameter: str, subset: str) -> str:
    """The run metric a promotion gate compares (written by ``legato evaluate``)."""
    return f"test_r2_{parameter}_{subset}"


def read_run_summary(folder: str | Path) -> dict:
    """``run.json`` of an estimator folder (run id and model URI), or a one-line error."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no run.json: train it with `legato train` first")
    summary = json.loads(path.read_text())
    if "model_uri" not in summary or "run_id" not in summary:
        raise ConfigError(f"{path} names no logged model (model_uri, run_id)")
    return summary


def register_estimator(client, name: str, folder: str | Path) -> tuple[object, bool]:
    """Register the model logged by the run behind ``folder`` (once: an already registered run is reused).

    Returns
    -------
    (ModelVersion, bool)
        The version and whether it was created now.
    """
    import mlflow

    summary = read_run_summary(folder)
    # one version per logged model: a run whose estimator was logged again (new code) gets a new version
    existing = [v for v in client.search_model_versions(f"name='{name}'") if v.source == summary["model_uri"]]
    if existing:
        version, created = existing[0], False
    else:
        version, created = mlflow.register_model(summary["model_uri"], name), True
    run = client.get_run(summary["run_id"])
    tags = {key: run.data.tags[key] for key in TAG_KEYS if key in run.data.tags}
    tags.update({key: f"{value:.5f}" for key, value in run.data.metrics.items() if key.startswith(("test_r2_", "val_r2_", "A_r2_"))})
    tags["estimator_folder"] = str(folder)
    parent = [
        v
        for v in client.search_model_versions(f"name='{name}'")
        if tags.get("adapted_from_model_uri") and v.source == tags["adapted_from_model_uri"]
    ]
    if parent:  # lineage: the registered version this one was fine-tuned from
        tags["parent_version"] = str(parent[0].version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    return client.get_model_version(name, version.version), created


def version_metrics(client, version, subset: str) -> dict[str, float]:
    """Gate metrics of a version (from its run), by parameter; missing ones are absent."""
    metrics = client.get_run(version.run_id).data.metrics
    return {p: metrics[gate_metric(p, subset)] for p in PARAMETERS if gate_metric(p, subset) in metrics}
