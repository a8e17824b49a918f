"""A published estimator (pulled from the DVC remote) made known to this MLflow store.

The production estimator is trained once, for hours, and published in the
repository's DVC remote; a fresh clone has it but not the MLflow run that
trained it. :func:`track_estimator` copies the estimator folder and gives the
copy a run in the current store: the training run itself when the store has
it, otherwise a new run carrying the estimator's recipe, training metrics,
model card and a servable pyfunc model, tagged with the original run id. The
copy is what evaluation, the registry and serving use.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from legato.errors import ConfigError
from legato.io.folders import publish_folder


def track_estimator(folder: str | Path, out: str | Path, tracking_uri: str | None = None, experiment: str = "legato") -> dict:
    """Copy ``folder`` to ``out`` with a ``run.json`` naming a run and logged model of this store.

    Returns
    -------
    dict
        ``run_id``, ``model_uri``, ``reused`` (the original training run was found) and the original run id.
    """
    import mlflow

    from legato.models.estimator import MANIFEST
    from legato.serving.pyfunc import log_estimator_model
    from legato.tracking import provenance_tags, start_tracking, training_domain

    folder, out = Path(folder), Path(out)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{folder} holds no estimator ({MANIFEST} missing): dvc pull it or train it first")
    manifest = json.loads(manifest_path.read_text())
    original = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)

    start_tracking(tracking_uri, experiment)
    client = mlflow.tracking.MlflowClient()
    reused = False
    if original.get("run_id"):
        try:
            client.get_run(original["run_id"])
            reused = client.get_logged_model(original["model_uri"].removeprefix("models:/")) is not None
        except Exception:  # noqa: BLE001 - not in this store
            reused = False
    if reused and bundles_current_code(original["model_uri"]):
        summary = {**original, "reused": True, "original_run_id": original["run_id"]}
    elif reused:
        # the training run is here, but its logged model bundles older legato code (what serving runs):
        # log the estimator again, with this code, in the same run
        with mlflow.start_run(run_id=original["run_id"]):
            info = log_estimator_model(staging, _example_stamps(int(manifest["stamp_size"])))
        summary = {
            **original,
            "model_uri": info.model_uri,
            "reused": True,
            "relogged_for_code": True,
            "original_run_id": original["run_id"],
        }
    else:
        training = manifest.get("training") or {}
        with mlflow.start_run(run_name=f"{manifest.get('architecture', 'estimator')} (published)") as run:
            mlflow.set_tags(
                {
                    "architecture": manifest.get("architecture", ""),
                    "training_domain": training_domain(training.get("recipe") or {}),
                    "method": "cnn",
                    "published_from_run": original.get("run_id", ""),
                    **provenance_tags(training.get("data", "")),
                }
            )
            mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in (training.get("recipe") or {}).items()})
            metrics = {f"val_r2_{p}": v for p, v in (training.get("validation_r2_training_depths") or {}).items()}
            metrics.update({"steps": training.get("steps", 0), "train_seconds": training.get("train_seconds", 0.0)})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
            if (folder / "MODEL_CARD.md").is_file():
                mlflow.log_artifact(str(folder / "MODEL_CARD.md"))
            example = _example_stamps(int(manifest["stamp_size"]))
            info = log_estimator_model(staging, example)
        summary = {
            **{k: v for k, v in original.items() if k not in ("run_id", "model_uri")},
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "reused": False,
            "original_run_id": original.get("run_id"),
        }
    (staging / "run.json").write_text(json.dumps(summary, indent=2))
    publish_folder(staging, out)
    return summary


def code_fingerprint(root: str | Path) -> str:
    """md5 over the relative paths and bytes of the ``*.py`` files under ``root`` (a legato package tree)."""
    import hashlib

    root = Path(root)
    digest = hashlib.md5()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def bundles_current_code(model_uri: str) -> bool:
    """Whether the logged model ``model_uri`` bundles the legato code of this checkout (its ``code/legato``)."""
    import mlflow

    import legato

    try:
        bundled = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/code/legato")
    except Exception:  # noqa: BLE001 - no bundled code: not current
        return False
    return code_fingerprint(bundled) == code_fingerprint(Path(legato.__file__).parent)


def _example_stamps(size: int):
    """Two seeded sky-noise stamps with a faint central source (the logged model's input example)."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size // 2
    source = 0.5 * np.exp(-(xx**2 + yy**2) / 8.0)
    return (source + rng.normal(0, 0.0087, (2, size, size))).astype(np.float32)
