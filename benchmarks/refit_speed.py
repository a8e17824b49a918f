"""Benchmark: what ``legato predict --refit-brighter-than`` costs end to end, against the network alone, in one run.

Runs ``legato predict`` on the Table 1 test set (5,000 stamps, the catalogue's magnitude mix: 3.7% brighter than
H = 21, 37% brighter than 23) with the refined estimator three times, back to back: without the refit, and with the
refit below each of ``--limits``; records each run's report (stamps/s, refitted rows) and this machine in
reports/refit_speed.json. ~4 min on 2 cores.

    python benchmarks/refit_speed.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", type=Path, default=Path("models/refined_tracked"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--limits", type=float, nargs="+", default=[21.0, 23.0])
    parser.add_argument("--out", type=Path, default=REPO / "reports/refit_speed.json")
    args = parser.parse_args()

    from astropy.table import Table

    from legato.evaluation.crb_catalogue import stamp_set_noise
    from legato.reports import machine_description

    exposure = stamp_set_noise(args.test)["exposure_time"]
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for limit in (None, *args.limits):
            name = "network" if limit is None else f"refit_brighter_than_{limit:g}"
            catalogue, report = Path(scratch) / f"{name}.fits", Path(scratch) / f"{name}.json"
            command = [sys.executable, "-m", "legato", "predict", str(args.test), "-o", str(catalogue), "--model", str(args.estimator)]
            command += ["--no-progress", "--report", str(report)]
            if limit is not None:
                command += ["--refit-brighter-than", str(limit), "--exposure-time", str(exposure)]
            subprocess.run(command, cwd=REPO, check=True)
            summary = json.loads(report.read_text())
            refit = np.asarray(Table.read(catalogue)["refit"], float) if limit is not None else np.zeros(1)
            runs[name] = {
                "rows": summary["rows"],
                "seconds": summary["seconds"],
                "stamps_per_s": summary["stamps_per_s"],
                "refitted": int(np.sum(refit == 1)),
            }
            print(name, json.dumps(runs[name]), flush=True)
    out = {
        "estimator": str(args.estimator),
        "input": str(args.test),
        "machine": machine_description(),
        "runs": runs,
        "command": "python benchmarks/refit_speed.py",
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
