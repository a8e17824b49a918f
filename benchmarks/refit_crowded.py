"""Benchmark: the refit on crowded stamps (``legato predict --refit-brighter-than 23 --refit-blended``) on realistic test A.

For each estimator (``--estimator NAME=FOLDER``; by default the two candidates before adaptation,
``routed`` and ``deblended``, and the adapted ones, ``adapted_scenes`` and ``adapted_routed``) and
pass count (``--symmetries``), three catalogues of the 935 labelled stamps of test A:

- ``network``: the estimator alone;
- ``refit``: ``--refit-brighter-than LIMIT``, the stamps not flagged ``BLENDED`` refit;
- ``refit_blended``: ``--refit-blended`` too, every stamp brighter than LIMIT refit, neighbours
  masked (:func:`legato.inference.measurements.refit_mask`).

One refit of every row brighter than the limit (``BLENDED`` ones included, through
:class:`legato.inference.measurements.AugmentedEstimator` with two workers, as ``legato predict``
runs it) gives both refit catalogues: a row's refit depends only on its own stamp and estimate.
Each is scored by :func:`legato.evaluation.truth.score_test_a`: against the classical labels
(all of test A: Table 2; with neighbours: issue 27's target before adaptation; the estimator's own
``BLENDED`` / isolated flag, with coverage) and against the simulated truth of the Sérsic galaxies
(isolated and with neighbours, H < 23 and all, with coverage).

::

    python benchmarks/refit_crowded.py     # ~15 min on 2 cores -> reports/refit_crowded.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from refit import network_estimates, refit_catalogue, refit_rows  # noqa: E402

ESTIMATORS = {
    "routed": "models/routed_tracked",
    "deblended": "models/deblended_tracked",
    "adapted_scenes": "models/adapted_scenes",
    "adapted_routed": "models/adapted_routed",
}
LABEL_SUBSETS = ("all", "with_neighbours", "isolated", "flagged_blended", "flagged_isolated")
TRUTH_SUBSETS = ("sersic_isolated_h23", "sersic_with_neighbours_h23", "sersic_isolated", "sersic_with_neighbours")


def scored(scores: dict, name: str, catalogue: dict) -> dict:
    """One catalogue's R² and coverage against the labels and the truth, and its count of refitted rows."""
    against, truth = scores["against_labels"][name], scores["against_truth"][name]

    def kept(block: dict) -> dict:
        return {"r2": block["r2"], "coverage": block.get("coverage"), "count": block["count"]}

    return {
        "refitted": int(np.sum(np.asarray(catalogue.get("refit", np.zeros(1)), float) == 1)),
        "labels": {s: kept(against[s]) for s in LABEL_SUBSETS},
        "truth": {s: kept(truth[s]) for s in TRUTH_SUBSETS},
    }


def evaluate(name: str, folder: Path, count: int, stamps, labels, args) -> dict:
    """The three catalogues of one estimator and pass count on test A."""
    from legato.evaluation.truth import score_test_a
    from legato.flags import BLENDED

    estimates = network_estimates(folder, count, stamps)
    refitted, seconds = refit_catalogue(estimates, stamps, args.test_a, args.limit, args.workers, blended=True)
    catalogues = {
        "network": estimates,
        "refit": refit_rows(estimates, refitted, args.limit, skip_flags=int(BLENDED)),
        "refit_blended": refit_rows(estimates, refitted, args.limit),
    }
    scores = score_test_a(labels, catalogues)
    entry = {"refit_seconds": round(seconds, 1), **{k: scored(scores, k, v) for k, v in catalogues.items()}}
    summary = {k: (v["labels"]["all"]["r2"], v["labels"]["with_neighbours"]["r2"]) for k, v in entry.items() if isinstance(v, dict)}
    print(name, count, json.dumps(summary), flush=True)
    return entry


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write its report; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-a", type=Path, default=Path("datasets/realistic/labelled/A"))
    parser.add_argument("--estimator", action="append", default=None, help="NAME=FOLDER (repeatable; default: the four of ESTIMATORS)")
    parser.add_argument("--symmetries", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--limit", type=float, default=23.0, help="the refit's magnitude limit (--refit-brighter-than)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/refit_crowded.json"))
    args = parser.parse_args(argv)

    from legato.io.stamps import read_stamp_set
    from legato.reports import machine_description, write_json

    estimators = dict(e.split("=", 1) for e in args.estimator) if args.estimator else ESTIMATORS
    began = time.perf_counter()
    stamps, labels, _ = read_stamp_set(args.test_a)
    report: dict = {
        "command": "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv]),
        "test_set": str(args.test_a),
        "stamps": len(stamps),
        "limit": args.limit,
        "machine": machine_description(),
        "workers": args.workers,
        "estimators": {
            name: {"folder": folder, "symmetries": {str(k): evaluate(name, Path(folder), k, stamps, labels, args) for k in args.symmetries}}
            for name, folder in estimators.items()
        },
    }
    report["seconds"] = round(time.perf_counter() - began, 1)
    write_json(args.out, report)
    print(f"wrote {args.out} ({report['seconds']} s)")
    return report


if __name__ == "__main__":
    main()
