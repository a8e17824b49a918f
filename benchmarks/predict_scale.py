"""Survey-scale inference: the local path, Spark local[2], and a Spark standalone cluster of 1 and 2 workers.

Writes ``reports/predict_scale.json``. The stamps are the simulated test set
(``datasets/simulated/test``, 5,000 stamps) tiled into Parquet shards of
10,000 stamps, each copy with fresh sky noise (sigma from params.yaml) and a
new order, generated shard by shard (never all in memory). Each run is a
separate ``legato predict`` process on the same 100,000 stamps with the same
model; the cluster runs start a real standalone master and workers of one core
on 127.0.0.1 (``legato.platform.spark_cluster``), stopped by PID after the run.

Per run: the job's rate (``stamps_per_s``: reading, predicting and writing,
as ``legato predict`` reports it for every engine), the whole process's rate
(start-up, JVM and model loading included), the peak resident memory (the
largest sum of RSS over the driver's process tree and, for the cluster, the
master's and workers' trees: JVMs and Python workers included, sampled every
0.2 s), and whether the rows equal the local path's bit for bit.

Usage::

    python benchmarks/predict_scale.py [--model champion] [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARD = 10_000
TARGET = 1500


def make_shards(folder: Path, n: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from legato.config import load_params
    from legato.io.stamps import read_stamp_set

    sigma = float(load_params(REPO / "params.yaml")["simulate"]["noise"]["sky_sigma"])
    base, _, _ = read_stamp_set(REPO / "datasets/simulated/test")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n, SHARD)):
        count = min(SHARD, n - start)
        pick = rng.integers(0, len(base), count)
        stamps = base[pick] + rng.normal(0.0, sigma, (count, *base.shape[1:])).astype(np.float32)
        flat = pa.FixedSizeListArray.from_arrays(pa.array(stamps.reshape(-1)), stamps.shape[1] * stamps.shape[2])
        table = pa.table({"id": np.arange(start, start + count, dtype=np.int64), "stamp": flat.cast(pa.list_(pa.float32()))})
        pq.write_table(table, folder / f"shard_{k:04d}.parquet", compression="none")


def measure(command: list[str], env: dict, extra_roots=()) -> dict:
    """Wall time and peak RSS of one command's process tree (plus the trees of ``extra_roots`` PIDs)."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def tree_rss(pid: int) -> int:
        try:
            root = psutil.Process(pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)] if p.is_running())
        except psutil.Error:
            return 0

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(tree_rss(pid) for pid in (process.pid, *extra_roots)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"command failed ({process.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 2**20, 1), "last_line": output.strip().splitlines()[-1]}


def compare(local: Path, other: Path) -> dict:
    """Whether two catalogues hold the same rows bit for bit (ids, every value column, flags)."""
    import pandas as pd

    a = pd.read_parquet(local).sort_values("id").reset_index(drop=True)
    b = pd.read_parquet(other).sort_values("id").reset_index(drop=True)
    same_ids = len(a) == len(b) and bool((a["id"].to_numpy() == b["id"].to_numpy()).all())
    columns = [c for c in a.columns if c not in ("id",)]
    if not same_ids or list(a.columns) != list(b.columns):
        return {"identical": False, "same_ids": same_ids, "same_columns": list(a.columns) == list(b.columns)}
    differing = [c for c in columns if not np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=c != "flags")]
    worst = max((float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)))) for c in differing), default=0.0)
    return {"identical": not differing, "same_ids": True, "differing_columns": differing, "max_abs_difference": worst}


def predict_command(source: Path, output: Path, report: Path, model: str, master: str | None) -> list[str]:
    command = [sys.executable, "-m", "legato", "predict", str(source), "-o", str(output), "--model", model, "--no-progress"]
    command += ["--report", str(report)]
    return command + (["--engine", "spark", "--master", master] if master else [])


def run(name: str, tmp: Path, model: str, env: dict, master: str | None = None, cluster=None) -> dict:
    output, report = tmp / f"{name}.parquet", tmp / f"{name}.json"
    roots = [pid for pid in cluster.pids().values() if pid] if cluster is not None else []
    measured = measure(predict_command(tmp / "all", output, report, model, master), env, roots)
    summary = json.loads(report.read_text())
    result = {
        "n": summary["rows"],
        "stamps_per_s": summary["stamps_per_s"],
        "job_s": summary["seconds"],
        "stamps_per_s_process": round(summary["rows"] / measured["wall_s"], 1),
        **measured,
    }
    if master:
        result["master"] = master
        result["parallelism"] = summary.get("parallelism")
    print(name, result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="champion")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=REPO / "reports/predict_scale.json")
    args = parser.parse_args()

    from legato.platform.spark_cluster import StandaloneCluster
    from legato.reports import machine_description

    load_start = [round(v, 2) for v in os.getloadavg()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="legato-scale-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_shards(tmp / "all", args.n)
        generate_s = time.perf_counter() - t0
        results["local"] = run("local", tmp, args.model, env)
        results["spark_local2"] = run("spark_local2", tmp, args.model, env, master="local[2]")
        for workers in (1, 2):
            with StandaloneCluster(workers=workers, cores=1, memory="3g", work_dir=tmp / f"cluster{workers}") as cluster:
                results[f"cluster_{workers}x1"] = run(f"cluster_{workers}x1", tmp, args.model, env, cluster.url, cluster)
        for name in ("spark_local2", "cluster_1x1", "cluster_2x1"):
            results[name]["vs_local"] = compare(tmp / "local.parquet", tmp / f"{name}.parquet")

    two, one = results["cluster_2x1"], results["cluster_1x1"]
    payload = {
        "command": "python benchmarks/predict_scale.py" + (f" --model {args.model}" if args.model != "champion" else ""),
        "load_average_at_start": load_start,
        "model": args.model,
        "input": f"{args.n} stamps in Parquet shards of {SHARD} (64x64 float32), tiled from datasets/simulated/test with fresh sky noise",
        "generate_s": round(generate_s, 1),
        "runs": results,
        "scaling_1_to_2_workers": round(two["stamps_per_s"] / one["stamps_per_s"], 3),
        "cluster_2x1_over_local": round(two["stamps_per_s"] / results["local"]["stamps_per_s"], 3),
        "target_stamps_per_s": TARGET,
        "target_met": bool(two["stamps_per_s"] >= TARGET and two["vs_local"]["identical"]),
        "machine": {
            **machine_description(),
            "python": platform.python_version(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(payload, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
