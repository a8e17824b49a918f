"""A real Spark standalone cluster on 127.0.0.1 (a master and two 1-core workers, stopped by PID).

`legato predict --engine spark --master spark://...` on Parquet and FITS shards against a registered
model matches the local path row for row; a job whose driver is killed leaves nothing half-written,
and its rerun with the same arguments, which loses a worker in the middle, writes every id exactly
once with no partial files. The cluster is the one `legato spark-cluster` starts for a user, stopped by its SIGTERM.
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


class CommandCluster:
    """The cluster ``legato spark-cluster`` runs in the foreground: its URL and PIDs as it prints them."""

    def __init__(self, work_dir):
        command = [sys.executable, "-m", "legato", "spark-cluster", "--workers", "2", "--memory", "2g", "--port", "0"]
        self.process = subprocess.Popen(
            [*command, "--work-dir", str(work_dir)], env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        master_line, pid_line = self.process.stdout.readline(), self.process.stdout.readline()
        assert master_line.startswith("master spark://127.0.0.1:"), master_line
        self.url = master_line.split()[1]
        self.pids = {item.split("=")[0]: int(item.split("=")[1]) for item in pid_line.split()[1:]}

    def python_workers(self, worker: str) -> set[int]:
        """PIDs of the Python processes below a worker (its executor runs its tasks in them)."""
        import psutil

        try:
            children = psutil.Process(self.pids[worker]).children(recursive=True)
        except psutil.Error:
            return set()
        found = set()
        for child in children:
            try:
                if "python" in child.name().lower():
                    found.add(child.pid)
            except psutil.NoSuchProcess:  # a finished task's worker exited between the listing and its name
                continue
        return found

    def kill(self, worker: str) -> None:
        """SIGKILL a worker's process group: the worker, its executor and the executor's Python workers (a lost machine)."""
        os.killpg(self.pids[worker], signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A master and two 1-core workers started by `legato spark-cluster`, stopped by its SIGTERM; every PID checked gone."""
    import psutil

    running = CommandCluster(tmp_path_factory.mktemp("cluster"))
    assert len(running.pids) == 3 and all(psutil.pid_exists(pid) for pid in running.pids.values())
    yield running
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=60) == 0

    def gone(pid):
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    _wait_for(lambda: all(gone(pid) for pid in running.pids.values()), 30, "the cluster to stop")


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


def _wait_for(condition, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_cluster_matches_local_on_parquet_and_fits_shards(cluster, registered, shards, tmp_path, repo_root):
    """Parquet shards, then FITS shards (the real UDS stamps, resized on the executors, and a corrupt file skipped by both)."""
    from legato.flags import TrainingRange
    from legato.inference.spark import predict_spark, spark_session

    training_range = TrainingRange.from_params_file(repo_root / "params.yaml")
    folder = tmp_path / "fits"
    folder.mkdir()
    for path in sorted((repo_root / UDS).glob("H.gf1[0-4].fits")):
        shutil.copy(path, folder)
    (folder / "broken.fits").write_text("not FITS")
    session = spark_session(cluster.url, app_name="legato-cluster-test")
    try:
        assert session.sparkContext.master == cluster.url
        summary = predict_spark(session, registered, shards, tmp_path / "cluster.parquet", training_range=training_range)
        predict_spark(session, registered, folder, tmp_path / "cluster_fits.parquet", training_range=training_range)
    finally:
        session.stop()  # the cluster's two cores go back for the next application
    assert summary["rows"] == SHARDS * SHARD_ROWS and summary["parallelism"] == 2
    _assert_same(_local(shards, registered, tmp_path / "local.parquet", repo_root), _read(tmp_path / "cluster.parquet"))
    _assert_complete(tmp_path / "cluster.parquet", range(SHARDS * SHARD_ROWS))
    local = _local(folder, registered, tmp_path / "local_fits.parquet", repo_root)
    assert len(local) == 5
    _assert_same(local, _read(tmp_path / "cluster_fits.parquet"))


def test_interrupted_job_rerun_survives_a_lost_worker(cluster, registered, shards, tmp_path, repo_root):
    """`legato predict` killed mid-job leaves nothing half-written; the rerun, which loses a worker mid-job, writes every row once.

    Last in the module: it leaves the cluster with one worker.
    """
    output = tmp_path / "out.parquet"
    command = _predict_command(shards, output, registered, cluster.url, repo_root)
    earlier = cluster.python_workers("worker-0") | cluster.python_workers("worker-1")  # a finished job's, exiting
    driver = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for(lambda: (cluster.python_workers("worker-0") | cluster.python_workers("worker-1")) - earlier, what="tasks on the executors")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its JVM, in the middle of the job
    driver.wait(timeout=30)
    assert not output.exists()  # nothing half-written where the catalogue goes

    earlier = cluster.python_workers("worker-0")  # the killed job's, exiting
    rerun = subprocess.Popen(command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: cluster.python_workers("worker-0") - earlier, what="a task on worker 0")
    assert rerun.poll() is None
    cluster.kill("worker-0")
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-3000:]
    _assert_complete(output, range(SHARDS * SHARD_ROWS))
