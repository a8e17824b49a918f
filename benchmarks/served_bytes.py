"""Does the served estimator answer the same bytes at two revisions? One set of requests, each revision's code.

For each revision, the published production estimator (``models/production``)
is saved as an MLflow model with that revision's code (bundled, as the
pipeline logs it), served by the real ``mlflow models serve`` on 127.0.0.1,
sent the same requests, and stopped by PID. The requests: galaxies from the
realistic test A, an all-zero stamp, a stamp with NaN pixels, a wrong shape,
booleans, an empty batch and malformed JSON (the 4xx answers are compared too).
Writes the response digests and whether every one matches::

    python benchmarks/served_bytes.py --base 374a838 --head HEAD --out reports/served_bytes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

SERVE = r"""
import json, sys
from pathlib import Path
import numpy as np
try:
    from legato.serving.pyfunc import save_estimator_model
except ImportError:  # revisions before the serving package held the pyfunc model
    from legato.training.train import save_estimator_model
from legato.serving.server import model_server
folder, work, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
example = np.random.default_rng(0).normal(0.0, 0.01, (2, 64, 64)).astype(np.float32)
path = save_estimator_model(folder, work / "model", example)
server = model_server(str(path), port=port, log_path=work / "server.log").start(timeout=300)
print(server.process.pid, flush=True)
sys.stdin.read()  # until the parent closes stdin
server.stop()
"""


def requests(stamps) -> dict[str, bytes]:
    """The request bodies, by name."""
    import numpy as np

    nan = stamps[0].copy()
    nan[10, 10] = np.nan
    return {
        "galaxies": json.dumps({"inputs": stamps[:8].tolist()}).encode(),
        "zero_stamp": json.dumps({"inputs": np.zeros((1, 64, 64)).tolist()}).encode(),
        "nan_pixel": json.dumps({"inputs": [[[None if v != v else float(v) for v in row] for row in nan]]}).encode(),
        "wrong_shape": json.dumps({"inputs": np.zeros((1, 32, 32)).tolist()}).encode(),
        "booleans": json.dumps({"inputs": [[[True] * 64] * 64]}).encode(),
        "empty": json.dumps({"inputs": []}).encode(),
        "malformed": b'{"inputs": [[[1, 2]',
    }


def post(port: int, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def answers(repo_root: Path, revision: str, work: Path, bodies: dict) -> dict:
    """Serve the published estimator with ``revision``'s code and send every body; status and digest by name."""
    from legato.serving.server import free_port

    work.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=repo_root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    env = dict(os.environ, PYTHONPATH=str(work / "src"), MLFLOW_DISABLE_TELEMETRY="true")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(repo_root / "models/production"), str(work), str(port)],
        cwd=repo_root,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if not line.strip():
            raise SystemExit(f"the server of {revision} did not start: see {work / 'server.log'}")
        out = {}
        for name, body in bodies.items():
            status, content = post(port, body)
            out[name] = {"status": status, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
        return out
    finally:
        server.stdin.close()
        server.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--out", type=Path, default=Path("reports/served_bytes.json"))
    args = parser.parse_args()
    repo_root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo_root / "src"))
    from legato.io.stamps import read_stamp_set

    stamps, _, _ = read_stamp_set(repo_root / "datasets/realistic/labelled/A")
    bodies = requests(stamps)
    revisions = {
        k: subprocess.run(["git", "rev-parse", "--short", r], cwd=repo_root, capture_output=True, text=True, check=True).stdout.strip()
        for k, r in (("base", args.base), ("head", args.head))
    }
    with tempfile.TemporaryDirectory(prefix="legato-served-") as tmp:
        result = {k: answers(repo_root, rev, Path(tmp) / k, bodies) for k, rev in revisions.items()}
    same = {name: result["base"][name] == result["head"][name] for name in bodies}
    report = {
        "what": "models/production saved and served with each revision's code; the same requests; response status and bytes compared",
        "revisions": revisions,
        "answers": result,
        "same_bytes": same,
        "all_same": all(same.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"revisions": revisions, "same_bytes": same, "all_same": report["all_same"]}, indent=2))


if __name__ == "__main__":
    main()
