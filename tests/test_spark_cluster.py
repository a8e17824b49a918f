"""A real Spark standalone cluster on 127.0.0.1 (a master and two 1-core workers, stopped by PID).

`legato predict --engine spark --master spark://...` on Parquet and FITS shards against a registered
model matches the local path row for row; a job whose driver is killed leaves nothing half-written,
and its rerun with the same arguments, which loses a worker in the middle, writes every id exactly
once with no partial files; `legato spark-cluster` starts and stops the processes a user runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow  # JVMs and `legato predict` processes: run by make test and CI

MODEL = "legato-sersic-cluster-test"
UDS = "data/candels_uds_galfit_blocks"
SHARDS, SHARD_ROWS = 8, 600  # one Spark task per shard (a row group below TASK_ROWS)


@pytest.fixture(scope="module")
def registered(trained):
    from legato.registry.store import registry_client
    from legato.registry.versions import register_estimator

    out, _ = trained
    version, _ = register_estimator(registry_client(), MODEL, out / "arch1")
    return f"models:/{MODEL}/{version.version}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from legato.platform.spark_cluster import StandaloneCluster

    with StandaloneCluster(workers=2, cores=1, memory="2g", work_dir=tmp_path_factory.mktemp("cluster")) as running:
        yield running
    assert not any(process.alive() for process in [running.master, *running.workers])


@pytest.fixture(scope="module")
def shards(tiny_sim, tmp_path_factory):
    """SHARDS Parquet shards of SHARD_ROWS stamps tiled from the tiny test set, fresh noise each; ids 0..N-1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from legato.io.stamps import read_stamp_set

    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("shards")
    for k in range(SHARDS):
        pick = rng.integers(0, len(stamps), SHARD_ROWS)
        cube = stamps[pick] + rng.normal(0.0, 0.003, (SHARD_ROWS, *stamps.shape[1:])).astype(np.float32)
        flat = pa.FixedSizeListArray.from_arrays(pa.array(cube.reshape(-1)), cube.shape[1] * cube.shape[2])
        ids = np.arange(k * SHARD_ROWS, (k + 1) * SHARD_ROWS, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "stamp": flat.cast(pa.list_(pa.float32()))}), folder / f"shard_{k}.parquet")
    return folder


def _environment():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def _predict_command(source, output, model, master, repo_root):
    return [
        sys.executable,
        "-m",
        "legato",
        "predict",
        str(source),
        "-o",
        str(output),
        "--model",
        model,
        "--engine",
        "spark",
        "--master",
        master,
        "--params",
        str(repo_root / "params.yaml"),
        "--no-progress",
    ]


def _run(command):
    result = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _local(source, model, output, repo_root):
    """The local engine in this process (the model already loaded by the fixtures)."""
    from legato.flags import TrainingRange
    from legato.inference.predict import predict_catalogue
    from legato.io.stamp_inputs import open_source
    from legato.registry.resolve import resolve_model

    resolved = resolve_model(model)
    training_range = TrainingRange.from_params_file(repo_root / "params.yaml")
    predict_catalogue(open_source(source), resolved, output, training_range=training_range, progress=False)
    return pd.read_parquet(output).sort_values("id").reset_index(drop=True)


def _read(output):
    return pd.read_parquet(output).sort_values("id").reset_index(drop=True)


def _assert_same(local, distributed):
    assert list(local["id"]) == list(distributed["id"])  # same rows, none lost or duplicated
    np.testing.assert_array_equal(local["flags"].to_numpy(), distributed["flags"].to_numpy())
    for name in ("mag", "re_arcsec", "n", "q", "ellipticity"):
        np.testing.assert_allclose(local[name].to_numpy(), distributed[name].to_numpy(), rtol=1e-6, atol=0, equal_nan=True)


def _assert_complete(output, ids):
    """Every id exactly once, a committed dataset, no partial or temporary files beside or inside it."""
    frame = pd.read_parquet(output)
    assert len(frame) == len(ids) and frame["id"].is_unique and set(frame["id"]) == set(ids)
    assert (output / "_SUCCESS").is_file()
    assert not list(output.rglob("_temporary")) and not list(output.parent.glob(f".{output.name}.*"))


def _python_workers(process) -> list:
    """The Python processes below ``process`` (a Spark worker's executor runs its tasks in them)."""
    import psutil

    try:
        return [p for p in psutil.Process(process.pid).children(recursive=True) if "python" in p.name().lower()]
    except psutil.Error:
        return []


def _wait_for(condition, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_cluster_matches_local_on_parquet_and_fits_shards(cluster, registered, shards, tmp_path, repo_root):
    assert cluster.alive_workers() == 2 and all(pid for pid in cluster.pids().values())
    local = _local(shards, registered, tmp_path / "local.parquet", repo_root)
    _run(_predict_command(shards, tmp_path / "cluster.parquet", registered, cluster.url, repo_root))
    distributed = _read(tmp_path / "cluster.parquet")
    assert len(distributed) == SHARDS * SHARD_ROWS
    _assert_same(local, distributed)
    _assert_complete(tmp_path / "cluster.parquet", range(SHARDS * SHARD_ROWS))

    # FITS shards (the real UDS stamps, resized on the executors); the corrupt file is skipped by both
    folder = tmp_path / "fits"
    folder.mkdir()
    for path in sorted((repo_root / UDS).glob("H.gf1[0-4].fits")):
        shutil.copy(path, folder)
    (folder / "broken.fits").write_text("not FITS")
    local = _local(folder, registered, tmp_path / "local_fits.parquet", repo_root)
    _run(_predict_command(folder, tmp_path / "cluster_fits.parquet", registered, cluster.url, repo_root))
    assert len(local) == 5
    _assert_same(local, _read(tmp_path / "cluster_fits.parquet"))


def test_interrupted_job_rerun_survives_a_lost_worker(registered, shards, tmp_path, tmp_path_factory, repo_root):
    """The driver killed mid-job leaves nothing half-written; the rerun, which loses a worker mid-job, writes every row once."""
    from legato.platform.spark_cluster import StandaloneCluster

    output = tmp_path / "out.parquet"
    with StandaloneCluster(workers=2, cores=1, memory="2g", work_dir=tmp_path_factory.mktemp("lossy")) as cluster:
        command = _predict_command(shards, output, registered, cluster.url, repo_root)
        driver = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for(lambda: any(_python_workers(w.process) for w in cluster.workers), what="tasks on the executors")
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its JVM, in the middle of the job
        driver.wait(timeout=30)
        assert not output.exists()  # nothing half-written where the catalogue goes

        earlier = {p.pid for p in _python_workers(cluster.workers[0].process)}  # the killed job's, exiting
        rerun = subprocess.Popen(command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: {p.pid for p in _python_workers(cluster.workers[0].process)} - earlier, what="a task on worker 0")
        assert rerun.poll() is None
        cluster.kill_worker(0)  # SIGKILL: the worker, its executor and the executor's Python workers (a lost machine)
        _, stderr = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, stderr[-3000:]
        assert not cluster.workers[0].alive() and cluster.workers[1].alive()
    _assert_complete(output, range(SHARDS * SHARD_ROWS))


def test_spark_cluster_command_starts_and_stops_by_pid(tmp_path):
    import psutil

    command = [sys.executable, "-m", "legato", "spark-cluster", "--workers", "2", "--port", "0", "--work-dir", str(tmp_path)]
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        master_line = process.stdout.readline()
        pid_line = process.stdout.readline()
        assert master_line.startswith("master spark://127.0.0.1:"), master_line
        pids = [int(item.split("=")[1]) for item in pid_line.split()[1:]]
        assert len(pids) == 3 and all(psutil.pid_exists(pid) for pid in pids)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0
    _wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids), 30, "stop")
