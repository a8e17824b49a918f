"""A shared MLflow tracking server on a real PostgreSQL, on loopback, as a team uses it.

One PostgreSQL (initialised by the test, stopped by PID) and one real ``mlflow server``
over it, serving the artifacts, for the whole module: the published history imported
onto it with its run ids, two clients in other processes logging at the same time,
`legato promote` / `legato rollback` from a second client, and `mlflow models serve`
loading the champion from it. Skipped only where PostgreSQL's server binaries are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from legato.cli import app

REPO = Path(__file__).resolve().parents[1]
HISTORY = REPO / "mlflow_history"
PARAMS = REPO / "params.yaml"
MODEL = "legato-team-test"
WRITER_RUNS = 20  # per writer
#: One training client: logs WRITER_RUNS runs (params, a metric history, an artifact) once told "go" on stdin.
WRITER = """
import json, sys, time
import mlflow

url, writer, runs, experiment = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
mlflow.set_tracking_uri(url)
mlflow.set_experiment(experiment)
print("ready", flush=True)
sys.stdin.readline()
start, ids = time.time(), []
for index in range(runs):
    with mlflow.start_run(run_name=f"writer{writer}-{index}") as run:
        mlflow.log_params({"writer": writer, "index": index, "lr": 0.001 * (index + 1)})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1 + index), step=step)
        mlflow.log_text(f"writer {writer} run {index}\\n", "notes/summary.txt")
        ids.append(run.info.run_id)
print(json.dumps({"writer": writer, "run_ids": ids, "start": start, "end": time.time()}), flush=True)
"""


def _cli(args: list[str], tracking_uri: str, **extra) -> subprocess.CompletedProcess:
    """``python -m legato ARGS`` in its own process, a client of ``tracking_uri``."""
    from legato.serving.server import mlflow_environment

    env = mlflow_environment(tracking_uri, extra)
    return subprocess.run([sys.executable, "-m", "legato", *args], capture_output=True, text=True, env=env, timeout=300)


# tests and module fixtures (the team's models) point MLflow at the server, which is gone after this module
pytestmark = pytest.mark.usefixtures("restore_mlflow_uris_for_module", "restore_mlflow_uris")


@pytest.fixture(scope="module")
def team_dir():
    """A folder the database's system user can reach when the tests run as root (pytest's temporary root is private)."""
    from legato.errors import ConfigError
    from legato.platform.postgres import postgres_bin_dir

    try:
        postgres_bin_dir()
    except ConfigError as exc:
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="legato-team-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def database(team_dir):
    """PostgreSQL on 127.0.0.1, initialised here, with the database ``mlflow``; stopped by PID afterwards."""
    from legato.platform.postgres import LocalPostgres

    db = LocalPostgres(team_dir / "pgdata", log_path=team_dir / "postgres.log")
    start = time.perf_counter()
    with db:
        print(f"\nPostgreSQL initialised and started: {time.perf_counter() - start:.1f} s")
        pid = db.pid
        yield db
    assert not db.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture(scope="module")
def server(database, team_dir):
    """The real ``mlflow server`` over the database, two workers, artifacts served from ``team_dir/artifacts``."""
    from legato.serving.server import tracking_server

    process = tracking_server(database.uri, team_dir / "artifacts", log_path=team_dir / "mlflow.log", workers=2, serve_artifacts=True)
    start = time.perf_counter()
    with process:
        print(f"\nmlflow server up on the new database (schema created): {time.perf_counter() - start:.1f} s")
        yield process
    assert process.process.poll() is not None, f"tracking server {process.pid} still running"


@pytest.fixture(scope="module")
def imported(server, database):
    """The published history imported onto the server (records into its database, artifacts through it), timed."""
    if not (HISTORY / "manifest.json").is_file():
        pytest.fail("mlflow_history missing: run `dvc pull export_history` (make data) first")
    start = time.perf_counter()
    done = _cli(
        ["history", "import", str(HISTORY), "--params", str(PARAMS), "--tracking-uri", server.url, "--store-uri", database.uri],
        server.url,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\nhistory import onto the server: {seconds:.1f} s ({done.stdout.strip()})")
    return json.loads((HISTORY / "manifest.json").read_text()), done.stdout, seconds


def _history_files(kind: str) -> dict[str, Path]:
    """Artifact files of the history, by ``<id>/<path>``."""
    found = {}
    for path in (HISTORY / kind).glob("*/artifacts/**/*"):
        if path.is_file():
            resource = path.relative_to(HISTORY / kind).parts[0]
            found[f"{resource}/{path.relative_to(HISTORY / kind / resource / 'artifacts').as_posix()}"] = path
    return found


def test_history_import_onto_the_server_keeps_run_ids_models_registry_and_artifacts(imported, server, database, team_dir):
    from mlflow import MlflowClient

    manifest, output, _ = imported
    assert f"runs: {len(manifest['runs'])} created, 0 present" in output
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)  # a client of the REST API only
    for run_id in manifest["runs"]:
        run = client.get_run(run_id)
        assert run.info.run_id == run_id and run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info
        record = json.loads((HISTORY / "runs" / run_id / "run.json").read_text())
        assert run.data.params == record["params"] and run.info.status == record["status"]
        assert set(run.data.metrics) == set(record["metrics"])
    for model_id in manifest["models"]:
        assert client.get_logged_model(model_id).model_id == model_id
    for model in manifest["registry"]:
        versions = {v["version"]: v for v in model["versions"]}
        assert len(client.search_model_versions(f"name='{model['name']}'")) == len(versions)
        assert client.get_registered_model(model["name"]).tags == model["tags"]
        for number, version in versions.items():
            got = client.get_model_version(model["name"], str(number))
            assert got.run_id == version["run_id"] and sorted(got.aliases) == version["aliases"], number
    # every artifact is in the server's store, and a client downloads it through the server, byte for byte
    experiment = client.get_experiment_by_name(manifest["experiments"][0])
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment.experiment_id}"
    folder = team_dir / "artifacts" / experiment.experiment_id
    stored = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    runs, models = _history_files("runs"), _history_files("models")
    assert stored == {f"{key.split('/', 1)[0]}/artifacts/{key.split('/', 1)[1]}" for key in runs} | {
        f"models/{key.split('/', 1)[0]}/artifacts/{key.split('/', 1)[1]}" for key in models
    }
    key, path = sorted(runs.items())[0]
    run_id, name = key.split("/", 1)
    fetched = Path(client.download_artifacts(run_id, name, dst_path=str(team_dir / "fetched")))
    assert fetched.read_bytes() == path.read_bytes()
    # twice changes nothing
    again = _cli(
        ["history", "import", str(HISTORY), "--params", str(PARAMS), "--tracking-uri", server.url, "--store-uri", database.uri], server.url
    )
    assert again.returncode == 0 and f"runs: 0 created, {len(manifest['runs'])} present" in again.stdout, again.stderr[-2000:]


def test_history_import_straight_into_the_database_keeps_run_ids(database, team_dir, imported):
    from mlflow import MlflowClient

    from legato.errors import ConfigError
    from legato.registry.history import import_history

    manifest, _, _ = imported
    uri = database.create_database("direct")
    start = time.perf_counter()
    summary = import_history(uri, HISTORY, artifact_root=team_dir / "direct-artifacts")
    print(f"\nhistory import straight into the database: {time.perf_counter() - start:.1f} s")
    assert summary["runs_created"] == len(manifest["runs"]) and summary["versions_created"] == sum(
        len(m["versions"]) for m in manifest["registry"]
    )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert {client.get_run(run_id).info.run_id for run_id in manifest["runs"]} == set(manifest["runs"])
    # the server's own database: its experiment's artifacts are the server's, so it refuses before writing anything
    with pytest.raises(ConfigError, match="keeps its artifacts on a tracking server"):
        import_history(database.uri, HISTORY)


def test_an_import_onto_a_server_without_its_database_is_a_one_line_error(server):
    result = CliRunner().invoke(app, ["history", "import", str(HISTORY), "--params", str(PARAMS), "--tracking-uri", server.url])
    assert result.exit_code == 1 and "cannot keep run ids" in result.output and "--store-uri" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_two_clients_log_at_the_same_time_through_the_server(server, team_dir, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url)
    experiment_id = client.create_experiment("team-writers")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    from legato.serving.server import mlflow_environment

    writers = [
        subprocess.Popen(
            [sys.executable, str(script), server.url, str(k), str(WRITER_RUNS), "team-writers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=mlflow_environment(server.url),
        )
        for k in (1, 2)
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        for writer in writers:  # both start together
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outcomes = [writer.communicate(timeout=300) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    for writer, (_, err) in zip(writers, outcomes):
        assert writer.returncode == 0 and "Traceback" not in err, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]
    assert max(r["start"] for r in results) < min(r["end"] for r in results)  # they did overlap
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    print(f"\ntwo concurrent writers: {2 * WRITER_RUNS} runs in {seconds:.1f} s = {2 * WRITER_RUNS / seconds:.1f} runs/s")

    runs = {run.info.run_id: run for run in client.search_runs([experiment_id], max_results=1000)}
    assert set(runs) == {run_id for r in results for run_id in r["run_ids"]} and len(runs) == 2 * WRITER_RUNS
    for result in results:
        for index, run_id in enumerate(result["run_ids"]):
            run = runs[run_id]
            assert run.info.status == "FINISHED" and run.data.params == {
                "writer": result["writer"],
                "index": str(index),
                "lr": str(0.001 * (index + 1)),
            }
            assert [m.value for m in client.get_metric_history(run_id, "loss")] == pytest.approx([1.0 / (s + 1 + index) for s in range(5)])
            stored = team_dir / "artifacts" / experiment_id / run_id / "artifacts" / "notes" / "summary.txt"
            assert stored.read_text() == f"writer {result['writer']} run {index}\n"  # uploaded through the server
    assert client.list_artifacts(run_id, "notes")[0].path == "notes/summary.txt"


@pytest.fixture(scope="module")
def team_models(trained, tiny_sim, server, tmp_path_factory):
    """The tiny Arch1 and Arch2 logged and registered through the server by a first client, with gate metrics.

    Arch1 scores R² 0.90 and Arch2 0.95 on every gated parameter (paper_h23), both validated.
    """
    import mlflow

    from legato.columns import PARAMETERS
    from legato.io.stamps import read_stamp_set
    from legato.registry.store import registry_client
    from legato.registry.versions import gate_metric, register_estimator
    from legato.serving.pyfunc import log_estimator_model
    from legato.tracking import start_tracking

    out, _ = trained
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    root = tmp_path_factory.mktemp("team-models")
    experiment_id = start_tracking(server.url, "team-models")
    folders, versions = {}, {}
    try:
        for label, score in (("arch1", 0.90), ("arch2", 0.95)):
            folder = root / label  # a copy: its run.json will name this server's run
            shutil.copytree(out / label, folder)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"team-{label}") as run:
                mlflow.set_tags({"architecture": label, "training_domain": "sim", "method": "cnn", "validation": "passed"})
                mlflow.log_metrics({gate_metric(p, "paper_h23"): score for p in PARAMETERS})
                info = log_estimator_model(folder, stamps[:2])
            (folder / "run.json").write_text(json.dumps({"run_id": run.info.run_id, "model_uri": info.model_uri}))
            client = registry_client(server.url)
            versions[label] = register_estimator(client, MODEL, folder)[0].version
            folders[label] = folder
        assert mlflow.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:/")
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    return versions, folders


def test_promote_and_rollback_from_a_second_client_move_the_champion_the_first_sees(team_models, server):
    from mlflow import MlflowClient

    versions, _ = team_models
    first = MlflowClient(tracking_uri=server.url, registry_uri=server.url)

    def second(*args):
        return _cli([*args, "--params", str(PARAMS), "--model", MODEL], server.url, LEGATO_USER="second-client")

    promoted = second("promote", "--version", versions["arch1"])
    assert promoted.returncode == 0 and f"@champion -> version {versions['arch1']}" in promoted.stdout, promoted.stderr
    assert first.get_model_version_by_alias(MODEL, "champion").version == versions["arch1"]
    promoted = second("promote", "--version", versions["arch2"])
    assert promoted.returncode == 0, promoted.stderr
    assert first.get_model_version_by_alias(MODEL, "champion").version == versions["arch2"]
    assert first.get_model_version(MODEL, versions["arch2"]).tags["promotion.by"] == "second-client"
    refused = second("promote", "--version", versions["arch1"])  # worse than the champion on every parameter
    assert refused.returncode == 1 and "not promoted" in refused.stderr and "Traceback" not in refused.stderr
    assert first.get_model_version_by_alias(MODEL, "champion").version == versions["arch2"]
    back = second("rollback")
    assert back.returncode == 0 and f"-> version {versions['arch1']}" in back.stdout, back.stderr
    assert first.get_model_version_by_alias(MODEL, "champion").version == versions["arch1"]
    assert first.get_model_version(MODEL, versions["arch1"]).tags["rollback.by"] == "second-client"


def test_mlflow_models_serve_loads_the_champion_from_the_server(team_models, server, tiny_sim, tmp_path):
    import urllib.request

    from mlflow import MlflowClient

    from legato.flags import TrainingRange
    from legato.inference.predict import predict_stamps
    from legato.io.stamps import read_stamp_set
    from legato.models.estimator import LoadedEstimator
    from legato.serving.server import model_server

    versions, folders = team_models
    champion = MlflowClient(tracking_uri=server.url, registry_uri=server.url).get_model_version_by_alias(MODEL, "champion").version
    folder = folders[{v: k for k, v in versions.items()}[champion]]
    training_range = TrainingRange.from_params_file(PARAMS)
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    with model_server(
        f"models:/{MODEL}@champion", tracking_uri=server.url, log_path=tmp_path / "serve.log", training_range=training_range
    ) as served:
        request = urllib.request.Request(
            served.url + "/invocations",
            data=json.dumps({"inputs": stamps[:4].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            rows = json.loads(response.read())["predictions"]
    assert served.process.poll() is not None
    assert len(rows) == 4 and set(rows[0]) == {"mag", "re_arcsec", "n", "q", "ellipticity", "flags"}
    columns, flags = predict_stamps(LoadedEstimator(folder), stamps[:4], np.zeros(4, dtype=np.int32), training_range)
    assert [row["flags"] for row in rows] == flags.tolist()
    for name, values in columns.items():
        np.testing.assert_allclose([row[name] for row in rows], values, rtol=1e-5, equal_nan=True)


def test_team_commands_report_bad_input_in_one_line(server, database, monkeypatch, tmp_path):
    from legato.platform import postgres
    from legato.platform.process import free_port

    runner = CliRunner()
    nowhere = f"postgresql+psycopg://mlflow@127.0.0.1:{free_port()}/mlflow"
    cases = [
        (["team", "server", "--backend-store-uri", "file:///tmp/mlruns"], "must be a database URI"),
        (["team", "server", "--backend-store-uri", nowhere, "--artifacts", str(tmp_path / "a")], "cannot connect to the database"),
        (["team", "server", "--backend-store-uri", database.uri, "--port", str(server.port)], f"port {server.port}"),
        (["team", "db", "--data", str(tmp_path / "pg"), "--port", str(database.port)], f"port {database.port}"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file.txt").write_text("not a cluster")
    cases.append((["team", "db", "--data", str(tmp_path / "full"), "--port", "1"], "holds no PostgreSQL cluster"))
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    result = runner.invoke(app, ["team", "db", "--data", str(tmp_path / "pg")])
    assert result.exit_code == 1 and "apt-get install postgresql" in result.output and "Traceback" not in result.output


def test_team_db_runs_in_the_foreground_until_interrupted(team_dir):
    import signal

    from legato.platform.process import free_port
    from legato.serving.server import mlflow_environment

    port = free_port()
    data = team_dir / "foreground"
    command = [sys.executable, "-m", "legato", "team", "db", "--data", str(data), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mlflow_environment())
    try:
        first = process.stdout.readline()
        assert f"PostgreSQL on 127.0.0.1:{port} (pid " in first and "initialised now" in first, process.stderr.read()
        assert f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow" in process.stdout.readline()
        pid = int(first.split("(pid ", 1)[1].split(")", 1)[0])
        os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "PostgreSQL stopped" in err, err
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (data / "PG_VERSION").is_file()
