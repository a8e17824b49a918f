"""Benchmark: RMSE / CRB at the bright end, on enough bright galaxies to measure it.

The Table 1 test set holds 22 galaxies at H 19-20, too few for a root-mean-square error to mean much (its
standard error is ~15%). This draws a bright test set from the same catalogue and simulator (``legato simulate
--mag-min 19 --mag-max 21``: the catalogue's galaxies of H 19-21, smoothed by a kernel scaled to them; a new
seed), computes its Cramér-Rao bounds (``legato crb``) and scores an estimator on it with
``benchmarks/tta.py`` (1 and 8 symmetries: RMSE / CRB per 1-mag bin, coverage of the truth). The stamps and
bounds go to a scratch folder; the report to reports/bright_end.json.

    python benchmarks/bright_end.py      # ~4 min on 2 cores (the bounds take most of it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", type=Path, default=Path("models/refined_tracked"))
    parser.add_argument("--galaxies", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--symmetries", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=REPO / "reports/bright_end.json")
    args = parser.parse_args()
    legato = [sys.executable, "-m", "legato"]
    with tempfile.TemporaryDirectory() as scratch:
        stamps, bounds = Path(scratch) / "bright", Path(scratch) / "crb.fits"
        draw = ["--mag-min", "19", "--mag-max", "21", "--train", "1", "--val", "1", "--test", str(args.galaxies)]
        subprocess.run([*legato, "simulate", *draw, "--seed", str(args.seed), "--out", str(stamps)], cwd=REPO, check=True)
        subprocess.run([*legato, "crb", "--stamps", str(stamps / "test"), "--out", str(bounds)], cwd=REPO, check=True)
        score = [sys.executable, str(REPO / "benchmarks/tta.py"), "--estimator", str(args.estimator), "--test", str(stamps / "test")]
        symmetries = ["--symmetries", *map(str, args.symmetries)]
        subprocess.run([*score, "--bounds", str(bounds), *symmetries, "--out", str(args.out)], cwd=REPO, check=True)
    report = json.loads(args.out.read_text())
    report["bright_set"] = {"mag_range": [19.0, 21.0], "galaxies": args.galaxies, "seed": args.seed}
    report["command"] = "python benchmarks/bright_end.py" + (
        "" if args.estimator == Path("models/refined_tracked") else f" --estimator {args.estimator}"
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
