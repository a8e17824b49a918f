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
    from legato.serving.pyfunc import log_estimator_model
    from legato.tracking import provenance_tags

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
        tiny_sim / "test",
        folders,
        {"classical": catalogue},
        {"paper_h23": 23.0},
        [16.0, 24.5],
        reports_dir=reports,
        predictions_dir=reports / "p",
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


def test_the_domain_alias_is_offered_its_best_candidate_through_the_gates(registry):
    from legato.errors import ConfigError
    from legato.registry.promotion import offer_domain_alias

    client, numbers, _ = registry
    versions = {label: client.get_model_version(MODEL, number) for label, number in numbers.items()}
    domain = {"alias": "domain-test", "subset": "paper_h23", "incumbent": "shifted", "candidates": ["shifted", "arch1"]}
    offered = offer_domain_alias(client, MODEL, versions, domain)
    # the alias starts with the incumbent; of the candidates, arch1 (the better magnitude) is offered and passes the gates
    assert offered["offered"] == "arch1" and offered["promoted"] and offered["holder"] == numbers["arch1"]
    again = offer_domain_alias(client, MODEL, versions, domain)
    assert not again["promoted"] and again["holder"] == numbers["arch1"] and "already holds" in again["summary"]
    with pytest.raises(ConfigError, match="no candidate of 'domain-test'"):
        offer_domain_alias(client, MODEL, versions, {**domain, "subset": "no_such_subset"})


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


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory, repo_root):
    """The champion (the tiny Arch1) behind the real `mlflow models serve` on 127.0.0.1, batch limit 8."""
    from legato.flags import TrainingRange
    from legato.registry.promotion import promote
    from legato.serving.server import model_server

    client, versions, folders = registry
    if client.get_model_version_by_alias(MODEL, "champion").version != versions["arch1"]:
        promote(client, MODEL, versions["arch1"], "champion", "paper_h23", force=True, reason="serving test")
    training_range = TrainingRange.from_params_file(repo_root / "params.yaml")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = model_server(f"models:/{MODEL}@champion", log_path=log, extra_env={"LEGATO_MAX_BATCH": "8"}, training_range=training_range)
    with server:
        yield server, folders["arch1"], training_range
    assert server.process.poll() is not None, f"server {server.process.pid} still running"


def test_served_rows_and_flags_are_those_of_legato_predict(served, tiny_sim):
    from legato.inference.predict import predict_stamps
    from legato.io.stamps import read_stamp_set
    from legato.models.estimator import LoadedEstimator

    server, folder, training_range = served
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    status, body = _post(server.url + "/invocations", json.dumps({"inputs": stamps[:6].tolist()}).encode())
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 6 and set(rows[0]) == {"mag", "re_arcsec", "n", "q", "ellipticity", "flags"}
    columns, flags = predict_stamps(LoadedEstimator(folder), stamps[:6], np.zeros(6, dtype=np.int32), training_range)
    assert [row["flags"] for row in rows] == flags.tolist()
    for name, values in columns.items():
        np.testing.assert_allclose([row[name] for row in rows], values, rtol=1e-5, equal_nan=True)


def test_unmeasurable_stamps_come_back_flagged_with_nan_values(served):
    from legato.flags import StampFlag

    server, _, _ = served
    noise = np.random.default_rng(0).normal(0.0, 0.0087, (64, 64))
    nan, inf = np.full((64, 64), 0.01), np.full((64, 64), 0.01)
    nan[5, 5], inf[7, 7] = np.nan, np.inf
    cases = {  # the stamp, and the flag bits its row must carry
        "all zeros": (np.zeros((64, 64)), StampFlag.FAILED_VALIDATION),
        "pure noise": (noise, StampFlag.NO_SOURCE | StampFlag.FAILED_VALIDATION),
        "-1e30": (np.full((64, 64), -1e30), StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION),
        "NaN pixel": (nan, StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION),
        "inf pixel": (inf, StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION),
    }
    status, body = _post(server.url + "/invocations", json.dumps({"inputs": [stamp.tolist() for stamp, _ in cases.values()]}).encode())
    assert status == 200, body
    for (name, (_, expected)), row in zip(cases.items(), body["predictions"]):
        assert row["flags"] & expected == expected, (name, row)
        assert all(np.isnan(value) for key, value in row.items() if key != "flags"), (name, row)


def test_every_malformed_body_is_a_4xx_with_a_one_line_json_message(served, tiny_sim):
    from legato.io.stamps import read_stamp_set

    server, _, _ = served
    url = server.url + "/invocations"
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    mixed_bool = stamps[:1].tolist()
    mixed_bool[0][3][3] = True
    nulls = stamps[:1].tolist()
    nulls[0][0][0] = None
    bad_requests = {
        "booleans": json.dumps({"inputs": [[[True] * 64] * 64]}).encode(),
        "a boolean among numbers": json.dumps({"inputs": mixed_bool}).encode(),
        "strings": json.dumps({"inputs": [[["a"] * 64] * 64]}).encode(),
        "a null pixel": json.dumps({"inputs": nulls}).encode(),
        "deeply nested JSON": b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "deeply nested JSON with NaN": b'{"inputs": [NaN, ' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
        "truncated JSON": b'{"inputs": [[[1.0, 2.0',
        "not UTF-8": b'{"inputs": [[[' + bytes([255, 254]) + b"]]]}",
        "wrong shape": json.dumps({"inputs": np.zeros((2, 32, 32)).tolist()}).encode(),
        "ragged rows": json.dumps({"inputs": [[[0.1] * 64] * 63 + [[0.1] * 10]]}).encode(),
        "empty batch": json.dumps({"inputs": []}).encode(),
        "empty body": b"",
        "a JSON array": json.dumps(np.zeros((1, 64, 64)).tolist()).encode(),
        "an unknown key": json.dumps({"dataframe_split": {"data": [[1.0]]}}).encode(),
        "too many stamps": json.dumps({"inputs": np.zeros((9, 64, 64)).tolist()}).encode(),
    }
    for name, request in bad_requests.items():
        status, body = _post(url, request)
        assert 400 <= status < 500, (name, status, body)
        assert body.get("message") and "\n" not in body["message"] and "Traceback" not in body["message"], (name, body)
    status, body = _post(url, json.dumps({"inputs": stamps[:1].tolist()}).encode(), content_type="text/csv")
    assert status == 415 and body["message"], body
    status, body = _post(url, json.dumps({"inputs": stamps[3:4].tolist()}).encode())
    assert status == 200 and len(body["predictions"]) == 1  # still serving after the bad requests


def test_an_oversized_request_is_refused_before_its_body_is_read(served):
    import http.client
    import time

    server, _, _ = served
    # declared far above the limit and never sent: the answer cannot wait for the body
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    start = time.perf_counter()
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(2 * 10**9))
    connection.endheaders()
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413 and "split the batch" in body["message"] and time.perf_counter() - start < 2.0
    # a body of 12 real-valued stamps (above the limit of 8 stamps' bytes), sent in full
    stamps = np.random.default_rng(1).normal(0.0, 0.0087, (12, 64, 64)).astype(np.float32)
    start = time.perf_counter()
    status, body = _post(server.url + "/invocations", json.dumps({"inputs": stamps.tolist()}).encode())
    assert status == 413 and body["message"] and time.perf_counter() - start < 2.0


def test_tracking_server_exposes_the_runs_side_by_side(registry, tmp_path):
    import os

    from legato.serving.server import tracking_server

    store = os.environ["MLFLOW_TRACKING_URI"]
    with tracking_server(store, tmp_path / "artifacts", log_path=tmp_path / "server.log") as server:
        request = urllib.request.Request(server.url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=legato", method="GET")
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
