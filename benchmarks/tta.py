"""Benchmark: does test-time augmentation (the 8 flips/rotations, means averaged) pay for its cost?

Scores the production estimator on the Table 1 test set once and averaged over
the 8 symmetries of every stamp (which leave mag, re, n and ellipticity
unchanged), R² at H <= 23 and H <= 24.5, and the in-process prediction rate of
each. Writes reports/tta.json.

    python benchmarks/tta.py --estimator models/production_tracked
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", type=Path, default=Path("models/production_tracked"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--out", type=Path, default=Path("reports/tta.json"))
    args = parser.parse_args()

    from legato.columns import COLUMN, PARAMETERS
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.stats import r2_table
    from legato.training.noisy_batches import dihedral

    estimator = LoadedEstimator(args.estimator)
    stamps, truth, _ = load_split(args.test)
    estimator.predict(stamps[:256])
    runs, seconds = [], []
    for code in range(8):
        flipped = dihedral(stamps, np.full(len(stamps), code))
        start = time.perf_counter()
        runs.append(estimator.predict(flipped))
        seconds.append(time.perf_counter() - start)
    averaged = {}
    for p in PARAMETERS:  # average in the network's space: logarithms for re and n
        values = np.stack([np.asarray(r[COLUMN[p]], float) for r in runs])
        averaged[COLUMN[p]] = np.exp(np.nanmean(np.log(values), axis=0)) if p in ("re", "n") else np.nanmean(values, axis=0)
    mag = np.asarray(truth["mag"], float)
    report = {"estimator": str(args.estimator), "n_test": len(stamps)}
    for name, limit in (("paper_h23", 23.0), ("full_h245", 24.5)):
        keep = mag <= limit
        report[name] = {
            "single": {p: round(v, 5) for p, v in r2_table(truth[keep], {k: np.asarray(v)[keep] for k, v in runs[0].items()}).items()},
            "tta8": {p: round(v, 5) for p, v in r2_table(truth[keep], {k: v[keep] for k, v in averaged.items()}).items()},
        }
    rate = len(stamps) / float(np.median(seconds))
    report["stamps_per_s"] = {"single": round(rate, 1), "tta8": round(rate / 8, 1)}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
