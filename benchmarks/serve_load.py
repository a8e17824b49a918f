"""Benchmark: a bounded load test of the real `mlflow models serve` on loopback.

Starts the promoted model (models:/legato-sersic@champion by default) with
`mlflow models serve --env-manager local` on 127.0.0.1, first sends single-stamp
requests alone (latency without queueing behind batches), then a fixed mix of
single-stamp, 64-stamp and malformed requests from concurrent clients; stops
the server by PID and writes reports/serve_load.json.

    python benchmarks/serve_load.py --requests 2000 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from legato.io.stamps import read_stamp_set
from legato.serving.server import model_server

MIX = ("single",) * 7 + ("batch64",) * 2 + ("malformed",)


def malformed_bodies(stamps: np.ndarray) -> list[bytes]:
    """Requests a server must refuse with a 4xx: broken JSON, wrong shape, strings, NaN, empty, oversized."""
    nan = stamps[:1].tolist()
    nan[0][0][0] = float("nan")
    return [
        b'{"inputs": [[[0.1, 0.2',
        json.dumps({"inputs": np.zeros((1, 32, 32)).tolist()}).encode(),
        json.dumps({"inputs": [[["x"] * 64] * 64]}).encode(),
        json.dumps({"inputs": nan}).encode(),
        json.dumps({"inputs": []}).encode(),
        json.dumps({"inputs": np.zeros((129, 64, 64), dtype=np.float32).tolist()}).encode(),
    ]


def send(url: str, body: bytes) -> tuple[int, float]:
    """POST one request; (HTTP status, latency in seconds)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        status = 0
    return status, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/legato-sersic@champion")
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--single-requests", type=int, default=1000, help="single-stamp-only phase before the mixed load")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the model server")
    parser.add_argument("--out", type=Path, default=Path("reports/serve_load.json"))
    args = parser.parse_args()

    stamps, _, _ = read_stamp_set(args.test)
    rng = np.random.default_rng(0)
    kinds = [MIX[k % len(MIX)] for k in range(args.requests)]
    bad = malformed_bodies(stamps)
    bodies = []
    for k, kind in enumerate(kinds):
        if kind == "single":
            bodies.append(json.dumps({"inputs": stamps[rng.integers(len(stamps))][None].tolist()}).encode())
        elif kind == "batch64":
            start = int(rng.integers(len(stamps) - 64))
            bodies.append(json.dumps({"inputs": stamps[start : start + 64].tolist()}).encode())
        else:
            bodies.append(bad[k % len(bad)])
    single_only = [json.dumps({"inputs": stamps[rng.integers(len(stamps))][None].tolist()}).encode() for _ in range(args.single_requests)]
    with model_server(args.model_uri, workers=args.workers, log_path=args.out.with_suffix(".server.log"), extra_env={"LEGATO_MAX_BATCH": "128"}) as server:
        url = server.url + "/invocations"
        for body in bodies[:10]:  # warm-up (graph building) outside the measurement
            send(url, body)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            alone = list(pool.map(lambda body: send(url, body), single_only))
        alone_wall = time.perf_counter() - start
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(pool.map(lambda body: send(url, body), bodies))
        wall = time.perf_counter() - start
        server_pid = server.process.pid
    alone_latency = np.array([t for _, t in alone]) * 1000.0
    statuses = np.array([s for s, _ in results])
    latency = np.array([t for _, t in results]) * 1000.0
    kinds = np.array(kinds)
    report = {
        "model_uri": args.model_uri, "concurrency": args.concurrency, "server_workers": args.workers,
        "server_pid_stopped": server_pid,
        "single_stamp_only": {
            "requests": len(alone), "errors": int(sum(s != 200 for s, _ in alone)),
            "p50_ms": round(float(np.percentile(alone_latency, 50)), 1), "p99_ms": round(float(np.percentile(alone_latency, 99)), 1),
            "requests_per_second": round(len(alone) / alone_wall, 1),
        },
        "mixed": {"requests": args.requests, "wall_seconds": round(wall, 2), "requests_per_second": round(args.requests / wall, 1)},
    }
    valid_stamps = 0
    for kind in ("single", "batch64", "malformed"):
        mask = kinds == kind
        entry = {"count": int(mask.sum()), "p50_ms": round(float(np.percentile(latency[mask], 50)), 1), "p99_ms": round(float(np.percentile(latency[mask], 99)), 1)}
        if kind == "malformed":
            entry["all_4xx"] = bool(np.all((statuses[mask] >= 400) & (statuses[mask] < 500)))
            entry["statuses"] = {str(s): int(np.sum(statuses[mask] == s)) for s in np.unique(statuses[mask])}
        else:
            entry["errors"] = int(np.sum(statuses[mask] != 200))
            valid_stamps += int(np.sum(statuses[mask] == 200)) * (1 if kind == "single" else 64)
        report["mixed"][kind] = entry
    report["mixed"]["stamps_per_second"] = round(valid_stamps / wall, 1)
    report["targets"] = {"valid_errors": 0, "single_p99_ms_below": 100}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
