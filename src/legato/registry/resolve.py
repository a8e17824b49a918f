"""Which model predicts: a registry alias, a version, a ``models:/`` URI or a path.

The registry forms are resolved to one concrete version (so a resumed run and
the output metadata name exactly the network that predicted), and the
estimator folder is read from the logged model's artifacts without importing
the code bundled with it (the local path runs the installed ``legato``).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from legato.errors import ConfigError, DataError
from legato.registry.store import DEFAULT_ALIAS, DEFAULT_MODEL_NAME


@dataclass
class ResolvedModel:
    """A model resolved to something loadable.

    Attributes
    ----------
    spec : str
        What the user asked for (alias, version, URI or path).
    uri : str
        Concrete MLflow model URI (``models:/NAME/VERSION``) or the local path.
    name, version, alias, run_id : str or None
        Registry identity (None for a local folder).
    estimator_dir : Path
        Folder with ``estimator.json`` (the networks and scalers).
    pyfunc_uri : str or None
        URI loadable by ``mlflow.pyfunc`` (None for a bare estimator folder).
    symmetries : int
        Flips/rotations each stamp is measured in, the estimates averaged (``legato predict --symmetries``).
    """

    spec: str
    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    estimator_dir: Path
    pyfunc_uri: str | None
    _tmp: object = field(default=None, repr=False)
    symmetries: int = 1

    def meta(self) -> dict:
        """Identity of the model for the output table's metadata."""
        return {
            "model_spec": self.spec,
            "model_uri": self.uri,
            "model_name": self.name or Path(self.uri).name,
            "model_version": self.version or "local",
            "model_alias": self.alias or "",
            "model_run_id": self.run_id or "",
            **({"model_symmetries": self.symmetries} if self.symmetries > 1 else {}),
        }

    def fingerprint(self) -> dict:
        """What identifies the predicting network for resuming."""
        averaged = {"symmetries": self.symmetries} if self.symmetries > 1 else {}
        if self.run_id or self.version:
            return {"uri": self.uri, "version": self.version, "run_id": self.run_id, **averaged}
        from legato.io.stamp_inputs import file_signature

        files = [file_signature(p) for p in sorted(self.estimator_dir.rglob("*")) if p.is_file()]
        return {"uri": self.uri, "files": files, **averaged}

    def load(self):
        """The :class:`~legato.models.estimator.LoadedEstimator` (TensorFlow is imported here)."""
        from legato.models.estimator import LoadedEstimator

        return LoadedEstimator(self.estimator_dir, self.symmetries)


def resolve_model(spec: str | None = None, name: str = DEFAULT_MODEL_NAME, tracking_uri: str | None = None) -> ResolvedModel:
    """Resolve a model specification.

    Parameters
    ----------
    spec : str, optional
        ``champion`` (default) or another alias; a version number (``3`` or
        ``v3``); ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``; a path to an
        estimator folder (``estimator.json``) or a saved MLflow model (``MLmodel``).
    name : str
        Registered model name for aliases and versions.
    tracking_uri : str, optional
        Tracking store (default: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).

    Raises
    ------
    ConfigError
        For an unknown alias, version or model (one line).
    """
    spec = str(spec or DEFAULT_ALIAS)
    path = Path(spec)
    if "://" not in spec and path.exists():
        return _from_path(spec, path)
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@(.+))", spec)
    if match:
        name, version, alias = match.group(1), match.group(2), match.group(3)
    elif re.fullmatch(r"[vV]?\d+", spec):
        version, alias = spec.lstrip("vV"), None
    elif re.fullmatch(r"[A-Za-z_][\w.-]*", spec):
        version, alias = None, spec
    else:
        raise ConfigError(f"model {spec!r} is neither an alias, a version, a models:/ URI nor an existing path")
    return _from_registry(spec, name, version, alias, tracking_uri)


def _from_path(spec: str, path: Path) -> ResolvedModel:
    path = path.resolve()
    if (path / "MLmodel").is_file():
        estimator = estimator_folder(path)
        return ResolvedModel(spec, str(path), path.name, None, None, None, estimator, str(path))
    if (path / "estimator.json").is_file():
        return ResolvedModel(spec, str(path), path.name, None, None, None, path, None)
    raise DataError(f"{path} is neither an estimator folder (estimator.json) nor an MLflow model (MLmodel)")


def estimator_folder(model_dir: Path, label: str | None = None) -> Path:
    """The estimator folder inside a saved MLflow pyfunc model (its ``estimator`` artifact)."""
    import yaml

    conf = yaml.safe_load((model_dir / "MLmodel").read_text()) or {}
    artifacts = (conf.get("flavors", {}).get("python_function", {}) or {}).get("artifacts", {}) or {}
    relative = (artifacts.get("estimator") or {}).get("path")
    candidates = [model_dir / relative] if relative else sorted((model_dir / "artifacts").glob("*"))
    for folder in candidates:
        if (folder / "estimator.json").is_file():
            return folder
    raise DataError(f"{label or model_dir} holds no legato estimator artifact")


def _from_registry(spec: str, name: str, version: str | None, alias: str | None, tracking_uri: str | None) -> ResolvedModel:
    import mlflow

    from legato.registry.store import get_version, registry_client, version_by_alias

    client = registry_client(tracking_uri)
    model_version = version_by_alias(client, name, alias) if alias else get_version(client, name, version)
    uri = f"models:/{name}/{model_version.version}"
    tmp = tempfile.TemporaryDirectory(prefix="legato-model-")
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # our own bar is the one that matters
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp.name))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a missing artifact
        tmp.cleanup()
        raise DataError(f"cannot download {uri}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous
    try:
        estimator = estimator_folder(local, uri)
    except DataError:
        tmp.cleanup()
        raise
    return ResolvedModel(spec, uri, name, str(model_version.version), alias, model_version.run_id, estimator, uri, tmp)
