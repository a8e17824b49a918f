"""Registry, gated promotion, rollback and the real `mlflow models serve` / `mlflow server` on loopback."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from typer.testing import CliRunner

from legato.cli import app

MODEL = "legato-sersic-test"


@pytest.fixture(scope="module")
def registry(trained, tiny_sim, tmp_path_factory, raw_data):
    """Three real runs: arch1, arch2 and arch1 with its magnitude output shifted by 0.5 mag (worse in mag only).

    All three are evaluated by `legato.evaluation.evaluate` on the tiny test set and registered.
    """
    import mlflow

    from legato.evaluation.evaluate import evaluate
    from legato.io.stamps import read_stamp_set
    from legato.registry.store import registry_client
    from legato.registry.versions import register_estimator
    from legato.tracking import provenance_tags
    from legato.training.train import log_estimator_model

    out, summaries = trained
    shifted = tmp_path_factory.mktemp("shifted") / "arch1_shifted"
    shutil.copytree(out / "arch1", shifted)
    scaler = json.loads((shifted / "network_scaler.json").read_text())
    scaler["mean"][0] += 0.5
    (shifted / "network_scaler.json").write_text(json.dumps(scaler))
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    with mlflow.start_run(run_name="arch1-shifted") as run:
        mlflow.set_tags({"architecture": "arch1", "training_domain": "sim", "method": "cnn", **provenance_tags(str(tiny_sim))})
        info = log_estimator_model(shifted, stamps[:2])
    (shifted / "run.json").write_text(json.dumps({"run_id": run.info.run_id, "model_uri": info.model_uri}))
    folders = {"arch1": out / "arch1", "arch2": out / "arch2", "shifted": shifted}
    reports = tmp_path_factory.mktemp("reports")
    # the classical fitter on the first 24 test stamps, tracked like the networks
    from legato.classical.fitter import FitSettings
    from legato.classical.run import fit_stamp_set
    from legato.classical.tracking import log_classical_run

    settings = FitSettings(pixel_scale=0.06, zeropoint=25.9463)
    catalogue = reports / "classical" / "test.fits"
    catalogue.parent.mkdir()
    summary = fit_stamp_set(tiny_sim / "test", catalogue, raw_data["psf"], settings, workers=2, block_size=6, max_stamps=24, progress=False)
    log_classical_run(summary, settings, tiny_sim / "test", catalogue, raw_data["psf"])
    table1 = evaluate(
        tiny_sim / "test", folders, {"classical": catalogue}, {"paper_h23": 23.0}, [16.0, 24.5],
        reports_dir=reports, predictions_dir=reports / "p",
    )
    assert 2 <= table1["n_scored"]["paper_h23"]["classical"] < table1["n_scored"]["paper_h23"]["arch1"]
    assert table1["same_galaxies"]["paper_h23"]["n"] == table1["n_scored"]["paper_h23"]["classical"]
    client = registry_client()
    versions = {label: register_estimator(client, MODEL, folder)[0].version for label, folder in folders.items()}
    return client, versions, folders


def test_versions_carry_provenance_and_metrics_and_register_once(registry):
    from legato.registry.versions import register_estimator

    client, versions, folders = registry
    version = client.get_model_version(MODEL, versions["arch2"])
    for key in ("architecture", "training_domain", "data_version", "git_revision", "validation", "test_r2_mag_paper_h23"):
        assert key in version.tags, key
    assert version.tags["architecture"] == "arch2" and version.tags["training_domain"] == "sim"
    assert version.tags["validation"] == "passed"
    again, created = register_estimator(client, MODEL, folders["arch2"])
    assert not created and again.version == versions["arch2"]


def test_promotion_refuses_a_worse_candidate_accepts_a_better_one_and_rolls_back(registry):
    from legato.errors import ConfigError
    from legato.registry.promotion import promote, rollback

    client, versions, _ = registry
    first = promote(client, MODEL, versions["shifted"], "champion", "paper_h23")
    assert first["promoted"] and first["previous"] is None
    better = promote(client, MODEL, versions["arch1"], "champion", "paper_h23")
    assert better["promoted"] and better["previous"] == versions["shifted"]
    worse = promote(client, MODEL, versions["shifted"], "champion", "paper_h23")
    assert not worse["promoted"] and any(f.startswith("R2 mag") for f in worse["failures"])
    assert client.get_model_version_by_alias(MODEL, "champion").version == versions["arch1"]
    with pytest.raises(ConfigError, match="--force needs --reason"):
        promote(client, MODEL, versions["shifted"], "champion", "paper_h23", force=True)
    forced = promote(client, MODEL, versions["shifted"], "champion", "paper_h23", force=True, reason="test override")
    assert forced["promoted"] and forced["forced"]
    tags = client.get_model_version(MODEL, versions["shifted"]).tags
    assert tags["promotion.reason"] == "test override" and tags["promotion.forced"] == "True" and tags["promotion.by"]
    assert client.get_model_version_by_alias(MODEL, "champion-previous").version == versions["arch1"]
    back = rollback(client, MODEL, "champion")
    assert back["version"] == versions["arch1"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == versions["arch1"]
    assert client.get_model_version(MODEL, versions["arch1"]).tags["rollback.previous"] == str(versions["shifted"])


def test_cli_lists_models_and_reports_registry_errors_in_one_line(registry, repo_root):
    runner = CliRunner()
    params = str(repo_root / "params.yaml")
    listing = runner.invoke(app, ["models", "--params", params, "--model", MODEL])
    assert listing.exit_code == 0, listing.output
    assert "champion" in listing.output and "arch2" in listing.output and "R2 mag" in listing.output
    for args, message in [
        (["models", "--model", "nope"], "unknown model 'nope'"),
        (["promote", "--model", MODEL, "--version", "99"], f"model '{MODEL}' has no version 99"),
        (["rollback", "--model", MODEL, "--alias", "gold"], f"model '{MODEL}' has no alias 'gold'"),
        (["models", "--tracking-uri", "sqlite:////nonexistent/dir/mlflow.db"], "no tracking store at"),
    ]:
        result = runner.invoke(app, [*args, "--params", params])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_champion_serves_valid_requests_and_rejects_bad_ones_with_json_4xx(registry, tiny_sim, tmp_path):
    from legato.io.stamps import read_stamp_set
    from legato.registry.promotion import promote
    from legato.serving.server import model_server

    client, versions, _ = registry
    if client.get_model_version_by_alias(MODEL, "champion").version != versions["arch1"]:
        promote(client, MODEL, versions["arch1"], "champion", "paper_h23", force=True, reason="serving test")
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    server = model_server(f"models:/{MODEL}@champion", log_path=tmp_path / "serve.log", extra_env={"LEGATO_MAX_BATCH": "8"})
    with server:
        url = server.url + "/invocations"
        status, body = _post(url, json.dumps({"inputs": stamps[:3].tolist()}).encode())
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == 3 and set(rows[0]) == {"mag", "re_arcsec", "n", "q", "ellipticity"}
        assert all(row["re_arcsec"] > 0 for row in rows)
        nan_stamp = stamps[:1].tolist()
        nan_stamp[0][5][5] = float("nan")
        bad_requests = {
            "malformed JSON": b'{"inputs": [[[1.0, 2.0',
            "wrong shape": json.dumps({"inputs": np.zeros((2, 32, 32)).tolist()}).encode(),
            "strings": json.dumps({"inputs": [[["a"] * 64] * 64]}).encode(),
            "NaN pixels": json.dumps({"inputs": nan_stamp}).encode(),
            "empty batch": json.dumps({"inputs": []}).encode(),
            "oversized batch": json.dumps({"inputs": np.zeros((9, 64, 64)).tolist()}).encode(),
        }
        for name, request in bad_requests.items():
            status, body = _post(url, request)
            assert 400 <= status < 500, (name, status, body)
            assert body.get("message"), (name, body)
        status, body = _post(url, json.dumps({"inputs": stamps[3:4].tolist()}).encode())
        assert status == 200 and len(body["predictions"]) == 1  # still serving after the bad requests
        pid = server.process.pid
    assert server.process.poll() is not None, f"server {pid} still running"


def test_tracking_server_exposes_the_runs_side_by_side(registry, tmp_path):
    import os

    from legato.serving.server import tracking_server

    store = os.environ["MLFLOW_TRACKING_URI"]
    with tracking_server(store, tmp_path / "artifacts", log_path=tmp_path / "server.log") as server:
        request = urllib.request.Request(
            server.url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=legato", method="GET"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            experiment = json.loads(response.read())["experiment"]
        status, found = _post(
            server.url + "/api/2.0/mlflow/runs/search",
            json.dumps({"experiment_ids": [experiment["experiment_id"]], "max_results": 100}).encode(),
        )
        assert status == 200
        runs = {run["info"]["run_name"]: run for run in found["runs"]}
        assert {"arch1", "arch2", "classical-imfit"} <= set(runs)
        for name in ("arch1", "arch2", "classical-imfit"):
            metrics = {m["key"] for m in runs[name]["data"]["metrics"]}
            assert "test_r2_mag_paper_h23" in metrics and "predict_stamps_per_second" in metrics
