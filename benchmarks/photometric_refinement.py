"""Benchmark: the photometric second stage (``legato refine``) against the Cramér-Rao bound, and the choice of its model.

The production network's magnitude error has a floor of about 0.026-0.037 mag from H = 19 to 23
(10x the bound at H 19-20) although the photometry of a bright galaxy is nearly noiseless. The
refined estimator adds a dense second stage on the stamp's curve of growth and moments
(:mod:`legato.models.refinement`). This benchmark scores, on the simulated test set against
the truth:

1. each ``--estimator NAME=FOLDER`` (e.g. the production estimator and its refined version):
   RMSE / CRB per 1-mag bin from H = 19 to 24.5, Table 1 R² (H <= 23, galaxies with a valid
   bound), and the coverage of the 68% / 95% intervals per bin;
2. with ``--gbm BASE``: the same second stage's features and residuals fitted instead by
   gradient-boosted trees (``sklearn.ensemble.HistGradientBoostingRegressor``, one per target,
   on the training split), the alternative the dense network was chosen over.

::

    python benchmarks/photometric_refinement.py --estimator production=models/production_tracked \\
        --estimator refined=models/refined_tracked --gbm models/production_tracked --out reports/photometric_refinement.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np

MAG_BINS = (19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 24.5)
PARAMETERS = {"mag": "mag", "re": "re_arcsec", "n": "n", "ellipticity": "ellipticity"}


def gbm_columns(base, train_dir: str, test_stamps: np.ndarray, test_columns: dict) -> tuple[dict, dict]:
    """The base's test rows corrected by gradient-boosted trees on the refinement stage's features."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from legato.conventions import BAND, ZEROPOINT_AB
    from legato.io.stamps import load_split
    from legato.models.refinement import LOG_TARGETS, stage_features, stage_residuals
    from legato.training.refine import estimator_rows

    zeropoint = ZEROPOINT_AB[BAND]
    stamps, labels, _ = load_split(train_dir)
    columns = estimator_rows(base, stamps)
    x, y = stage_features(stamps, columns, zeropoint), stage_residuals(labels, columns)
    del stamps
    x_test = stage_features(test_stamps, test_columns, zeropoint)
    good = np.all(np.isfinite(x_test), axis=1)
    out, info = dict(test_columns), {}
    for i, (name, log) in enumerate(LOG_TARGETS.items()):
        ok = np.all(np.isfinite(x), axis=1) & np.isfinite(y[:, i])
        model = HistGradientBoostingRegressor(max_iter=600, learning_rate=0.05, min_samples_leaf=40, early_stopping=True, random_state=0)
        model.fit(x[ok], y[ok, i])
        delta = np.zeros(len(x_test))
        delta[good] = model.predict(x_test[good])
        out[name] = test_columns[name] * np.exp(delta) if log else test_columns[name] + delta
        info[name] = {"iterations": int(model.n_iter_)}
    return out, info


def scores(truth, methods: dict, bounds: dict) -> dict:
    """RMSE / CRB and coverage per 1-mag bin and Table 1 R² (H <= 23) of each method."""
    from legato.columns import ERROR_SUFFIXES
    from legato.evaluation.efficiency import efficiency_report
    from legato.models.uncertainty import covered

    report = efficiency_report(truth, methods, bounds, {"paper_h23": 23.0}, MAG_BINS)
    mag = np.asarray(truth["mag"], dtype=float)
    out = {"mag_bins": list(MAG_BINS), "counts": [row["count"] for row in report["binned"][next(iter(methods))]["mag"]]}
    for method, columns in methods.items():
        block = {
            "r2_h23": {p: round(v, 5) for p, v in report["subsets"]["paper_h23"]["methods"][method]["r2"].items()},
            "rmse_over_crb": {
                p: [None if row["ratio"] is None else round(row["ratio"], 2) for row in rows]
                for p, rows in report["binned"][method].items()
            },
            "rmse": {
                p: [None if row["rmse"] is None else round(row["rmse"], 5) for row in rows] for p, rows in report["binned"][method].items()
            },
        }
        if all(f"{c}_err" in columns for c in PARAMETERS.values()):
            block["coverage"] = {}
            for p, c in PARAMETERS.items():
                truth_p = np.asarray(truth[c], dtype=float)
                block["coverage"][p] = {
                    level: [
                        round(float(np.mean(covered(truth_p[inside], columns[c][inside], columns[f"{c}{suffix}"][inside]))), 3)
                        for inside in ((mag >= lo) & (mag < hi) for lo, hi in zip(MAG_BINS[:-1], MAG_BINS[1:]))
                    ]
                    for level, suffix in ERROR_SUFFIXES.items()
                }
        out[method] = block
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimator", action="append", required=True, help="NAME=FOLDER (repeatable)")
    parser.add_argument("--test", default="datasets/simulated/test")
    parser.add_argument("--train", default="datasets/simulated/train", help="training split of the --gbm alternative")
    parser.add_argument("--bounds", default="datasets/crb/test.fits")
    parser.add_argument("--gbm", default=None, help="base estimator folder of the gradient-boosted alternative")
    parser.add_argument("--out", default="reports/photometric_refinement.json")
    args = parser.parse_args(argv)

    from astropy.table import Table

    from legato.evaluation.efficiency import aligned_bounds
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.reports import machine_description, write_json
    from legato.training.refine import estimator_rows

    stamps, truth, _ = load_split(args.test)
    methods, seconds, extra = {}, {}, {}
    for item in args.estimator:
        name, folder = item.split("=", 1)
        estimator = LoadedEstimator(folder)
        start = time.perf_counter()
        methods[name] = estimator_rows(estimator, stamps)
        seconds[name] = round(time.perf_counter() - start, 2)
    if args.gbm:
        base = LoadedEstimator(args.gbm)
        start = time.perf_counter()
        methods["gbm_second_stage"], extra["gbm"] = gbm_columns(base, args.train, stamps, estimator_rows(base, stamps))
        seconds["gbm_second_stage_fit"] = round(time.perf_counter() - start, 1)
    bounds = aligned_bounds(Table.read(args.bounds), np.asarray(truth["id"]))
    report = {
        "command": "python benchmarks/photometric_refinement.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine_description(),
        "test": args.test,
        "estimators": dict(item.split("=", 1) for item in args.estimator),
        "predict_seconds_on_test": seconds,
        **extra,
        "scores": scores(truth, methods, bounds),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
