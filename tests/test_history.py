"""The MLflow history shipped with the repository: export from one real store, import into another, ids kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from legato.errors import ConfigError, LegatoError
from legato.registry.history import _check_id, export_history, import_history, referenced_run_ids

pytestmark = pytest.mark.usefixtures("restore_mlflow_uris")  # these tests point MLflow at their own stores


def _make_source_store(root: Path) -> tuple[str, dict]:
    """A real SQLite store with a parent run, a child run with a metric history, a logged model and two versions (1 and 3:
    version 2 was deleted)."""
    import mlflow

    from legato.tracking import start_tracking

    uri = f"sqlite:///{root / 'source.db'}"
    start_tracking(uri, "legato", artifact_root=root / "source-artifacts")

    class Double(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.asarray(model_input) * 2

    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("recipe", "toy")
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_params({"epochs": 3, "lr": 0.001})
            for step, loss in enumerate([1.0, 0.5, 0.25]):
                mlflow.log_metric("loss", loss, step=step)
            mlflow.set_tag("architecture", "toy")
            (root / "note.txt").write_text("evaluation figure stand-in")
            mlflow.log_artifact(str(root / "note.txt"), artifact_path="evaluation")
            info = mlflow.pyfunc.log_model(name="model", python_model=Double(), input_example=np.ones((1, 2)))
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_registry_uri(uri)
    client.create_registered_model("legato-sersic", tags={"kind": "toy"})
    first = client.create_model_version(
        "legato-sersic", info.model_uri, run_id=child.info.run_id, tags={"architecture": "toy"}, model_id=info.model_id
    )
    deleted = client.create_model_version("legato-sersic", info.model_uri, run_id=child.info.run_id, model_id=info.model_id)
    client.delete_model_version("legato-sersic", deleted.version)  # its number stays taken: the next version is 3
    second = client.create_model_version("legato-sersic", info.model_uri, run_id=child.info.run_id, model_id=info.model_id)
    client.set_registered_model_alias("legato-sersic", "champion", second.version)
    return uri, {
        "parent": parent.info.run_id,
        "child": child.info.run_id,
        "model": info.model_id,
        "versions": (first.version, second.version),
    }


def test_history_round_trip_keeps_ids_runs_metrics_models_and_registry(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri, ids = _make_source_store(tmp_path)
    summary = tmp_path / "run.json"
    summary.write_text(json.dumps({"report": {"runs": [{"run_id": ids["child"]}]}, "other": "x" * 32}))
    assert referenced_run_ids([summary, tmp_path / "absent.json"]) == {ids["child"]}

    manifest = export_history(uri, {ids["child"]}, tmp_path / "history", model_names=["legato-sersic"])
    assert set(manifest["runs"]) == {ids["parent"], ids["child"]}  # the parent came with its child
    assert manifest["models"] == [ids["model"]] and manifest["missing_runs"] == []

    target = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.chdir(tmp_path)
    created = import_history(target, tmp_path / "history", artifact_root=tmp_path / "fresh-artifacts")
    assert (created["runs_created"], created["models_created"], created["versions_created"]) == (2, 1, 2)

    client = MlflowClient(tracking_uri=target, registry_uri=target)
    child = client.get_run(ids["child"])
    assert child.data.params == {"epochs": "3", "lr": "0.001"} and child.data.tags["architecture"] == "toy"
    assert child.data.tags["mlflow.parentRunId"] == ids["parent"] and child.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(ids["child"], "loss")] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert [a.path for a in client.list_artifacts(ids["child"], "evaluation")] == ["evaluation/note.txt"]
    assert [o.model_id for o in child.outputs.model_outputs] == [ids["model"]]
    versions = sorted(client.search_model_versions("name='legato-sersic'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == list(ids["versions"]) == [1, 3] and versions[0].tags["architecture"] == "toy"
    assert client.get_model_version_by_alias("legato-sersic", "champion").version == ids["versions"][1]
    mlflow.set_tracking_uri(target)
    mlflow.set_registry_uri(target)
    served = mlflow.pyfunc.load_model("models:/legato-sersic@champion")
    assert np.allclose(np.asarray(served.predict(np.ones((1, 2)))), 2.0)

    again = import_history(target, tmp_path / "history", artifact_root=tmp_path / "fresh-artifacts")
    assert (again["runs_created"], again["runs_present"], again["models_present"]) == (0, 2, 1)
    assert again["registered_models_skipped"] == ["legato-sersic"]


def test_history_import_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ConfigError, match="manifest.json missing"):
        import_history(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "experiments": [], "runs": [], "models": [], "registry": []}))
    with pytest.raises(ConfigError, match="SQL-backed"):
        import_history("http://127.0.0.1:5000", tmp_path)
    with pytest.raises(LegatoError, match="does not work with this MLflow version"):
        _check_id("a" * 32, "b" * 32, "run")


def test_a_logged_model_is_current_only_with_this_code(tmp_path):
    """track-estimator logs the published estimator again when the code its logged model bundles is not this code."""
    import shutil

    import legato
    from legato.registry.publish import bundles_current_code, code_fingerprint

    package = Path(legato.__file__).parent
    model = tmp_path / "model"
    shutil.copytree(package, model / "code/legato", ignore=shutil.ignore_patterns("__pycache__"))
    assert code_fingerprint(model / "code/legato") == code_fingerprint(package)
    assert bundles_current_code(str(model))
    (model / "code/legato/serving/endpoint.py").write_text("# an older endpoint\n")
    assert not bundles_current_code(str(model))
    assert not bundles_current_code(str(tmp_path / "absent"))
