"""Survey-scale inference benchmark: `legato predict` on 10k and 100k stamps, and on Spark local[2].

Writes ``reports/predict_scale.json``. The stamps are the simulated test set
(``datasets/simulated/test``, 5,000 stamps) tiled into Parquet shards of
10,000 stamps, each copy with fresh sky noise (sigma from params.yaml) and a
new order, generated shard by shard (never all in memory). Each run is a
separate ``legato predict`` process; its peak resident memory is the largest
sum of RSS over its process tree (JVM and Python workers included for Spark),
sampled every 0.2 s.

Usage::

    python benchmarks/predict_scale.py [--model champion] [--spark-n 20000]
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


def measure(command: list[str], env: dict) -> dict:
    """Wall time and peak process-tree RSS of one command."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="champion")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--spark-n", type=int, default=20_000, help="stamps for the Spark run (a prefix of the same shards)")
    parser.add_argument("--out", type=Path, default=REPO / "reports/predict_scale.json")
    args = parser.parse_args()

    load_start = [round(v, 2) for v in os.getloadavg()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    legato = [sys.executable, "-m", "legato"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="legato-scale-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_shards(tmp / "all", args.n)
        generate_s = time.perf_counter() - t0
        shards = sorted((tmp / "all").glob("*.parquet"))
        for label, n in (("small", args.small), ("spark", args.spark_n)):
            (tmp / label).mkdir()
            for shard in shards[: -(-n // SHARD)]:
                os.link(shard, tmp / label / shard.name)
        runs = {"local_10k": ("small", args.small), "local_100k": ("all", args.n)}
        for name, (folder, n) in runs.items():
            report = tmp / f"{name}.json"
            cmd = [
                *legato,
                "predict",
                str(tmp / folder),
                "-o",
                str(tmp / f"{name}.parquet"),
                "--model",
                args.model,
                "--no-progress",
                "--report",
                str(report),
            ]
            measured = measure(cmd, env)
            run = json.loads(report.read_text())
            n = run["rows"]
            results[name] = {
                "n": n,
                "stamps_per_s_inference_loop": run["stamps_per_s"],
                "stamps_per_s_end_to_end": round(n / measured["wall_s"], 1),
                "loop_s": run["seconds"],
                **measured,
            }
            print(name, results[name], flush=True)
        report = tmp / "spark.json"
        cmd = [
            *legato,
            "predict",
            str(tmp / "spark"),
            "-o",
            str(tmp / "spark_out.parquet"),
            "--model",
            args.model,
            "--engine",
            "spark",
            "--master",
            "local[2]",
            "--no-progress",
            "--report",
            str(report),
        ]
        measured = measure(cmd, env)
        run = json.loads(report.read_text())
        results["spark_local2"] = {
            "n": run["rows"],
            "stamps_per_s_job": run["stamps_per_s"],
            "stamps_per_s_end_to_end": round(run["rows"] / measured["wall_s"], 1),
            "job_s": run["seconds"],
            **measured,
        }
        print("spark", results["spark_local2"], flush=True)

    local = results["local_100k"]
    spark = results["spark_local2"]
    payload = {
        "load_average_at_start": load_start,
        "command": "python benchmarks/predict_scale.py" + (f" --model {args.model}" if args.model != "champion" else ""),
        "model": args.model,
        "input": f"Parquet shards of {SHARD} stamps (64x64 float32), tiled from datasets/simulated/test with fresh sky noise",
        "generate_s": round(generate_s, 1),
        "runs": results,
        "target_stamps_per_s": 1000,
        "target_met_local": local["stamps_per_s_inference_loop"] >= 1000,
        "rss_ratio_100k_over_10k": round(local["peak_rss_mib"] / results["local_10k"]["peak_rss_mib"], 3),
        "spark_over_local_rate": round(spark["stamps_per_s_job"] / local["stamps_per_s_inference_loop"], 3),
        "machine": {
            "cpus": os.cpu_count(),
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
