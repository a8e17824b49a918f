"""Benchmark: a bounded load test of the real `mlflow models serve` on loopback, against the serving targets.

Serves the promoted model (models:/legato-sersic@champion by default) with
`mlflow models serve --env-manager local` on 127.0.0.1. By default the
champion's estimator is first saved as an MLflow model with this revision's
code (`legato.serving.pyfunc.save_estimator_model`: what the pipeline's
`track_production` + `register` stages log), because a logged model serves the
legato code bundled with it; `--as-logged` serves the registry's artifact as is.

Phases: (1) single-stamp requests alone; (2) a fixed mix of single-stamp,
64-stamp and malformed requests; (3) untimed checks that blank, pure-noise,
-1e30 and NaN stamps come back flagged with NaN values. Clients are threads of
this process sending pre-encoded bodies, each request on a fresh connection
(see `Client`); the server is stopped by PID and the report, with each target
and whether it was met, goes to reports/serve_load.json.

    python benchmarks/serve_load.py --requests 2000 --concurrency 8 --workers 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from legato.flags import StampFlag, TrainingRange
from legato.io.stamps import read_stamp_set
from legato.serving.server import model_server

MIX = ("single",) * 7 + ("batch64",) * 2 + ("malformed",)
SERSIC_COLUMNS = {
    "single_only_p99_ms_below": 50.0,
    "mixed_single_p99_ms_below": 300.0,
    "mixed_stamps_per_second_at_least": 500.0,
    "valid_request_errors": 0,
    "malformed_all_4xx_with_json_message": True,
}


def malformed_bodies(stamps: np.ndarray, max_batch: int) -> dict[str, bytes]:
    """Requests a server must refuse with a 4xx and a JSON message."""
    mixed_bool = stamps[:1].tolist()
    mixed_bool[0][0][0] = True
    return {
        "truncated JSON": b'{"inputs": [[[0.1, 0.2',
        "wrong shape": json.dumps({"inputs": np.zeros((1, 32, 32)).tolist()}).encode(),
        "strings": json.dumps({"inputs": [[["x"] * 64] * 64]}).encode(),
        "booleans": json.dumps({"inputs": mixed_bool}).encode(),
        "deeply nested": b'{"inputs": ' + b"[" * 50000 + b"]" * 50000 + b"}",
        "empty batch": json.dumps({"inputs": []}).encode(),
        "too many stamps": json.dumps({"inputs": np.zeros((max_batch + 1, 64, 64), dtype=np.float32).tolist()}).encode(),
    }


def flagged_bodies(rng) -> dict[str, bytes]:
    """Valid requests whose stamp cannot be measured: the answer is a flagged row of NaN values."""
    nan = np.full((1, 64, 64), 0.01)
    nan[0, 5, 5] = np.nan
    return {
        "all zeros": json.dumps({"inputs": np.zeros((1, 64, 64)).tolist()}).encode(),
        "pure noise": json.dumps({"inputs": rng.normal(0.0, 0.0087, (1, 64, 64)).tolist()}).encode(),
        "-1e30": json.dumps({"inputs": np.full((1, 64, 64), -1e30).tolist()}).encode(),
        "NaN pixel": json.dumps({"inputs": nan.tolist()}).encode(),
    }


class Client:
    """Requests on a fresh HTTP/1.1 connection each, with TCP_NODELAY (as urllib or curl send them).

    A fresh connection goes to whichever server worker accepts it first, i.e. an
    idle one; a keep-alive connection stays with the worker that accepted it, and
    8 of them split unevenly over 2 workers, a lottery this benchmark leaves out.
    """

    def __init__(self, port: int):
        self.port = port

    def post(self, body: bytes, headers: dict | None = None) -> tuple[int, bytes, float]:
        """(HTTP status or 0 on a connection error, response body, latency in seconds)."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3/requests do
            connection.request("POST", "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            return response.status, content, time.perf_counter() - start
        except (http.client.HTTPException, OSError):
            return 0, b"", time.perf_counter() - start
        finally:
            connection.close()


def run_clients(port: int, bodies: list[bytes], concurrency: int) -> tuple[list, float]:
    """Send ``bodies`` from ``concurrency`` client threads; (results in order, wall seconds)."""
    client = Client(port)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(client.post, bodies))
    return results, time.perf_counter() - start


def json_message(content: bytes) -> bool:
    """Whether an error body is a JSON object with a one-line message."""
    try:
        message = json.loads(content).get("message", "")
    except (ValueError, AttributeError):
        return False
    return bool(message) and "\n" not in message and "Traceback" not in message


def latency_summary(latencies_s) -> dict:
    ms = np.asarray(latencies_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def served_model(args, workdir: Path) -> tuple[str, dict]:
    """The URI to serve and what it is."""
    from legato.registry.resolve import resolve_model

    resolved = resolve_model(args.model_uri)
    info = {"model_uri": args.model_uri, "version": resolved.version, "run_id": resolved.run_id}
    if args.as_logged:
        return resolved.pyfunc_uri or resolved.uri, {**info, "served": "the registered artifact as logged (its bundled legato code)"}
    from legato.registry.publish import _example_stamps
    from legato.serving.pyfunc import save_estimator_model

    path = save_estimator_model(resolved.estimator_dir, workdir / "model", _example_stamps(resolved.load().stamp_size))
    return str(path), {**info, "served": "its estimator saved as an MLflow model with this revision's code (save_estimator_model)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/legato-sersic@champion")
    parser.add_argument("--as-logged", action="store_true", help="serve the registered artifact with its bundled code")
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="training range for OUT_OF_RANGE")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--single-requests", type=int, default=1000, help="single-stamp-only phase before the mixed load")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the model server")
    parser.add_argument("--max-batch", type=int, default=128, help="LEGATO_MAX_BATCH of the server")
    parser.add_argument("--out", type=Path, default=Path("reports/serve_load.json"))
    args = parser.parse_args()

    stamps, _, _ = read_stamp_set(args.test)
    rng = np.random.default_rng(0)
    bad = malformed_bodies(stamps, args.max_batch)
    bad_names = list(bad)
    kinds = [MIX[k % len(MIX)] for k in range(args.requests)]
    bodies, bad_kinds = [], []
    for kind in kinds:
        if kind == "single":
            bodies.append(json.dumps({"inputs": stamps[rng.integers(len(stamps))][None].tolist()}).encode())
        elif kind == "batch64":
            start = int(rng.integers(len(stamps) - 64))
            bodies.append(json.dumps({"inputs": stamps[start : start + 64].tolist()}).encode())
        else:
            bad_kinds.append(bad_names[len(bad_kinds) % len(bad_names)])
            bodies.append(bad[bad_kinds[-1]])
    single_only = [json.dumps({"inputs": stamps[rng.integers(len(stamps))][None].tolist()}).encode() for _ in range(args.single_requests)]
    flagged = flagged_bodies(rng)
    training_range = TrainingRange.from_params_file(args.params) if args.params.is_file() else None

    with tempfile.TemporaryDirectory(prefix="legato-serve-load-") as workdir:
        uri, model_info = served_model(args, Path(workdir))
        server = model_server(
            uri,
            workers=args.workers,
            log_path=args.out.with_suffix(".server.log"),
            extra_env={"LEGATO_MAX_BATCH": str(args.max_batch)},
            training_range=training_range,
        )
        with server:
            port = server.port
            run_clients(port, bodies[:10] + single_only[:20], args.concurrency)  # warm-up (graph building) outside the measurement
            alone, alone_wall = run_clients(port, single_only, args.concurrency)
            results, wall = run_clients(port, bodies, args.concurrency)
            oversized = oversized_body_check(port, args.max_batch)
            trust = {name: Client(port).post(body) for name, body in flagged.items()}
            server_pid = server.process.pid
            server_env = {
                k: server.env.get(k)
                for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "LEGATO_MAX_BATCH")
            }
    report = build_report(args, model_info, server_pid, server_env, kinds, bad_kinds, alone, alone_wall, results, wall, oversized, trust)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def oversized_body_check(port: int, max_batch: int) -> dict:
    """A body of max_batch + 40 real-valued stamps (above the byte limit): refused with 413 from its Content-Length."""
    stamps = np.random.default_rng(1).normal(0.0, 0.0087, (max_batch + 40, 64, 64)).astype(np.float32)
    body = json.dumps({"inputs": stamps.tolist()}).encode()
    status, content, seconds = Client(port).post(body)
    return {"bytes": len(body), "status": status, "json_message": json_message(content), "seconds": round(seconds, 3)}


def build_report(args, model_info, server_pid, server_env, kinds, bad_kinds, alone, alone_wall, results, wall, oversized, trust) -> dict:
    """The JSON report: settings, measured figures, each target and whether it was met."""
    import mlflow

    kinds = np.array(kinds)
    statuses = np.array([status for status, _, _ in results])
    latency = np.array([seconds for _, _, seconds in results])
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "cores": os.cpu_count(),
            "processor": platform.machine(),
            "python": platform.python_version(),
            "mlflow": mlflow.__version__,
        },
        **model_info,
        "concurrency": args.concurrency,
        "server_workers": args.workers,
        "server_env": server_env,
        "client": "threads of the benchmark process, pre-encoded bodies, a fresh HTTP/1.1 connection (TCP_NODELAY) per request",
        "server_pid_stopped": server_pid,
        "single_stamp_only": {
            "requests": len(alone),
            "errors": int(sum(status != 200 for status, _, _ in alone)),
            **latency_summary([seconds for _, _, seconds in alone]),
            "requests_per_second": round(len(alone) / alone_wall, 1),
        },
        "mixed": {"requests": len(results), "wall_seconds": round(wall, 2), "requests_per_second": round(len(results) / wall, 1)},
    }
    valid_stamps = 0
    for kind in ("single", "batch64", "malformed"):
        mask = kinds == kind
        entry = {"count": int(mask.sum()), **latency_summary(latency[mask])}
        if kind == "malformed":
            chosen = [results[i] for i in np.flatnonzero(mask)]
            entry["all_4xx_with_json_message"] = all(400 <= status < 500 and json_message(content) for status, content, _ in chosen)
            entry["statuses"] = {
                name: sorted({status for (status, _, _), b in zip(chosen, bad_kinds) if b == name}) for name in dict.fromkeys(bad_kinds)
            }
        else:
            entry["errors"] = int(np.sum(statuses[mask] != 200))
            valid_stamps += int(np.sum(statuses[mask] == 200)) * (1 if kind == "single" else 64)
        report["mixed"][kind] = entry
    report["mixed"]["stamps_per_second"] = round(valid_stamps / wall, 1)
    report["oversized_body"] = oversized
    report["unmeasurable_stamps"] = {name: trust_entry(status, content) for name, (status, content, _) in trust.items()}
    report["targets"] = targets_met(report)
    return report


def trust_entry(status: int, content: bytes) -> dict:
    """Status, flags and whether every value of the one-row answer is NaN."""
    if status != 200:
        return {"status": status, "json_message": json_message(content)}
    row = json.loads(content)["predictions"][0]
    flags = int(row["flags"])
    values = [v for k, v in row.items() if k != "flags"]
    return {
        "status": status,
        "flags": flags,
        "flag_names": [f.name for f in StampFlag if flags & f],
        "all_values_nan": all(math.isnan(v) for v in values),
    }


def targets_met(report: dict) -> dict:
    """Each target with the measured figure and whether it was met."""
    mixed = report["mixed"]
    valid_errors = report["single_stamp_only"]["errors"] + mixed["single"]["errors"] + mixed["batch64"]["errors"]
    malformed_ok = (
        mixed["malformed"]["all_4xx_with_json_message"]
        and report["oversized_body"]["status"] == 413
        and report["oversized_body"]["json_message"]
    )
    measured = {
        "single_only_p99_ms_below": report["single_stamp_only"]["p99_ms"],
        "mixed_single_p99_ms_below": mixed["single"]["p99_ms"],
        "mixed_stamps_per_second_at_least": mixed["stamps_per_second"],
        "valid_request_errors": valid_errors,
        "malformed_all_4xx_with_json_message": bool(malformed_ok),
    }
    met = {
        "single_only_p99_ms_below": measured["single_only_p99_ms_below"] < SERSIC_COLUMNS["single_only_p99_ms_below"],
        "mixed_single_p99_ms_below": measured["mixed_single_p99_ms_below"] < SERSIC_COLUMNS["mixed_single_p99_ms_below"],
        "mixed_stamps_per_second_at_least": measured["mixed_stamps_per_second_at_least"]
        >= SERSIC_COLUMNS["mixed_stamps_per_second_at_least"],
        "valid_request_errors": valid_errors == 0,
        "malformed_all_4xx_with_json_message": bool(malformed_ok),
    }
    return {name: {"target": SERSIC_COLUMNS[name], "measured": measured[name], "met": met[name]} for name in SERSIC_COLUMNS} | {
        "all_met": all(met.values())
    }


if __name__ == "__main__":
    main()
