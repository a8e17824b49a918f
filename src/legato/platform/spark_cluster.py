"""A Spark standalone cluster on this machine: one master and N workers on 127.0.0.1, stopped by PID.

The processes are pyspark's own (``bin/spark-class org.apache.spark.deploy.master.Master``
and ``...worker.Worker``), each in its own process group, so that stopping or
killing a worker takes its executor and the executor's Python workers with it,
as when a machine of a real cluster is lost. The executors run the driver's
interpreter (``PYSPARK_PYTHON``: the same path on every machine of a cluster
that mounts the same environment; docs/scale.md gives the packed-environment
alternative).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from legato.errors import ConfigError, LegatoError
from legato.platform.process import LOOPBACK, ManagedProcess, free_port

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_home() -> Path:
    """pyspark's installation (its ``bin/spark-class`` and jars), or a one-line error."""
    try:
        import pyspark
    except ImportError:
        raise ConfigError("a Spark cluster needs pyspark: pip install pyspark (Java 17+)") from None
    home = Path(pyspark.__file__).parent
    if not (home / "bin" / "spark-class").is_file():
        raise ConfigError(f"pyspark at {home} has no bin/spark-class")
    return home


def cluster_environment(work_dir: Path) -> dict[str, str]:
    """The environment of the master and workers: pyspark's home, loopback, this interpreter for executors."""
    env = dict(os.environ)
    env.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": LOOPBACK,
            "SPARK_LOG_DIR": str(work_dir / "logs"),
            "SPARK_WORKER_DIR": str(work_dir / "work"),
            "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
        }
    )
    return env


class StandaloneCluster:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1.

    Parameters
    ----------
    workers : int
        Number of worker processes.
    cores : int
        Cores each worker offers (one executor per worker takes them all).
    memory : str
        Memory each worker offers executors (Spark's notation, e.g. ``"3g"``).
    work_dir : str or Path, optional
        Logs and the workers' scratch space (default: a new temporary folder).
    port : int, optional
        The master's port (default: a free one).

    Examples
    --------
    >>> with StandaloneCluster(workers=2) as cluster:       # doctest: +SKIP
    ...     spark = spark_session(cluster.url)
    """

    def __init__(self, workers: int = 2, cores: int = 1, memory: str = "3g", work_dir: str | Path | None = None, port: int | None = None):
        if workers < 1 or cores < 1:
            raise ConfigError(f"a cluster needs at least one worker and one core each, got {workers} worker(s) of {cores} core(s)")
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="legato-spark-cluster-"))
        self.port = port or free_port()
        self.ui_port = free_port()
        self.master: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []

    @property
    def url(self) -> str:
        """The master URL for ``--master`` / ``spark_session``."""
        return f"spark://{LOOPBACK}:{self.port}"

    @property
    def ui_url(self) -> str:
        """The master's web UI (its ``/json/`` lists the workers)."""
        return f"http://{LOOPBACK}:{self.ui_port}"

    def status(self) -> dict:
        """The master's JSON status (workers and their state), or ``{}`` if it does not answer."""
        try:
            with urllib.request.urlopen(self.ui_url + "/json/", timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return {}

    def alive_workers(self) -> int:
        """Workers the master sees as ALIVE."""
        return sum(1 for worker in self.status().get("workers", []) if worker.get("state") == "ALIVE")

    def start(self, timeout: float = 120.0) -> StandaloneCluster:
        """Start the master, then the workers; return once the master sees every worker ALIVE."""
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        env = cluster_environment(self.work_dir)
        spark_class = str(spark_home() / "bin" / "spark-class")
        master = [spark_class, MASTER_CLASS, "--host", LOOPBACK, "--port", str(self.port), "--webui-port", str(self.ui_port)]
        self.master = ManagedProcess(master, self.port, None, env, self.work_dir / "logs" / "master.log", ready=lambda: bool(self.status()))
        self.master.start(timeout)
        try:
            for index in range(self.n_workers):
                self.workers.append(self._start_worker(index, spark_class, env, timeout))
            self._wait_for_workers(self.n_workers, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_worker(self, index: int, spark_class: str, env: dict, timeout: float) -> ManagedProcess:
        port, ui_port = free_port(), free_port()
        scratch = self.work_dir / "work" / f"worker-{index}"
        scratch.mkdir(parents=True, exist_ok=True)
        command = [
            spark_class,
            WORKER_CLASS,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
            "--cores",
            str(self.cores),
            "--memory",
            self.memory,
            "--work-dir",
            str(scratch),
            self.url,
        ]
        worker = ManagedProcess(command, port, None, env, self.work_dir / "logs" / f"worker-{index}.log")
        return worker.start(timeout)

    def _wait_for_workers(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_workers() >= count:
                return
            time.sleep(0.3)
        raise LegatoError(f"the Spark master at {self.url} sees {self.alive_workers()} of {count} workers after {timeout:.0f} s")

    def pids(self) -> dict[str, int | None]:
        """Process ids of the master and each worker (process-group leaders)."""
        return {"master": self.master.pid if self.master else None, **{f"worker-{i}": w.pid for i, w in enumerate(self.workers)}}

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` with its executor and Python workers (a lost machine)."""
        self.workers[index].stop(kill=True)

    def stop(self) -> None:
        """Stop every worker, then the master, by PID."""
        for worker in self.workers:
            worker.stop()
        if self.master is not None:
            self.master.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
