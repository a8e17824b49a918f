"""A Spark standalone cluster on this machine for ``legato predict --engine spark``: ``spark-cluster``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import run_in_foreground


def spark_cluster(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one executor each).")] = 2,
    cores: Annotated[int, typer.Option(min=1, help="Cores each worker offers.")] = 1,
    memory: Annotated[str, typer.Option(help="Memory each worker offers its executor (Spark notation, e.g. 3g).")] = "3g",
    port: Annotated[int, typer.Option(min=0, max=65535, help="The master's port (0: a free one).")] = 7077,
    work_dir: Annotated[Optional[Path], typer.Option(help="Logs and scratch space (default: a new temporary folder).")] = None,
):
    """Start a Spark standalone master and WORKERS workers on 127.0.0.1, in the foreground, until Ctrl-C.

    Prints the master URL for `legato predict --engine spark --master URL` and every PID;
    Ctrl-C (or SIGTERM) stops the workers and the master. See docs/scale.md.
    """
    from legato.errors import ConfigError
    from legato.platform.process import port_open
    from legato.platform.spark_cluster import StandaloneCluster

    if port and port_open(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use: give another --port (0 picks a free one)")
    cluster = StandaloneCluster(workers=workers, cores=cores, memory=memory, work_dir=work_dir, port=port or None)

    def lines():
        return [
            f"master {cluster.url} (UI {cluster.ui_url}); {workers} worker(s) of {cores} core(s), {memory} each",
            "pids " + " ".join(f"{name}={pid}" for name, pid in cluster.pids().items()),
            f"logs {cluster.work_dir / 'logs'}; Ctrl-C stops the cluster",
        ]

    run_in_foreground("the Spark cluster", cluster.start, lambda: cluster.master.process.wait(), cluster.stop, lines)
