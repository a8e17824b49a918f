"""Choose the routed estimator's disagreement threshold off the test sets (docs/scenes.md, "The routed estimator").

Both routes (the F160W production network, the scene-trained one) predict the realistic pool B, whose
Sérsic galaxies have a known truth, and the simulated validation set (isolated galaxies, Table 1's kind).
For each threshold a stamp goes to the scene network when it is flagged ``BLENDED`` or the two disagree by
more than the threshold (:func:`legato.models.routing.disagreement`). Reported: how many stamps each rule
routes, R² against the truth on B's Sérsic galaxies with and without neighbours (H < 23), R² against B's
classical labels, and the validation set's Table 1 (H <= 23). Test A and the test set are never read.

    python benchmarks/route_threshold.py --report reports/route_threshold.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from legato.flags import BLENDED
from legato.io.stamps import load_split
from legato.models.estimator import LoadedEstimator
from legato.models.routing import disagreement, routed_rows
from legato.stats import r2_score

PARAMETERS = ("mag", "re_arcsec", "n", "ellipticity")


def _r2(truth, estimate) -> dict:
    return {p: round(float(r2_score(np.asarray(truth[p], dtype=float), estimate[p])), 4) for p in PARAMETERS}


def _masked(columns: dict, mask) -> dict:
    return {p: columns[p][mask] for p in PARAMETERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolated", default="models/production_tracked")
    parser.add_argument("--blended", default="models/scenes_tracked")
    parser.add_argument("--pool", default="datasets/realistic/labelled/B")
    parser.add_argument("--validation", default="datasets/simulated/val")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[10.0, 7.0, 5.0, 4.0, 3.0, 2.0])
    parser.add_argument("--report", default="reports/route_threshold.json")
    args = parser.parse_args()

    routes = LoadedEstimator(args.isolated), LoadedEstimator(args.blended)
    pool, pool_labels, _ = load_split(args.pool)
    val, val_labels, _ = load_split(args.validation)
    on_pool, on_val = [r.predict(pool) for r in routes], [r.predict(val) for r in routes]
    neighbours = np.asarray(pool_labels["n_neighbours"]) > 0
    sersic_bright = (np.asarray(pool_labels["kind"]) == "sersic") & (np.asarray(pool_labels["gen_mag"]) < 23)
    truth = {p: np.asarray(pool_labels[f"gen_{p}"], dtype=float) for p in PARAMETERS}
    bright_val = np.asarray(val_labels["mag"]) <= 23
    rules = {}
    for threshold in [None, *args.thresholds]:
        rows = {}
        for name, (first, second) in (("pool", on_pool), ("validation", on_val)):
            flagged = (first["flags"] & BLENDED) > 0
            gap = disagreement(first, second)
            to_scenes = routed_rows(flagged, True, gap, threshold)
            rows[name] = (to_scenes, {p: np.where(to_scenes, second[p], first[p]) for p in PARAMETERS})
        (pool_rows, pool_est), (val_rows, val_est) = rows["pool"], rows["validation"]

        def subset(mask, estimate=pool_est):
            return {p: estimate[p][mask] for p in PARAMETERS}

        rules["flag only" if threshold is None else f"flag or > {threshold:g} sigma"] = {
            "threshold": threshold,
            "pool_routed": {"with_neighbours": int((pool_rows & neighbours).sum()), "isolated": int((pool_rows & ~neighbours).sum())},
            "validation_routed": int(val_rows.sum()),
            "truth_sersic_with_neighbours_h23": _r2(
                {p: truth[p][sersic_bright & neighbours] for p in PARAMETERS}, subset(sersic_bright & neighbours)
            ),
            "truth_sersic_isolated_h23": _r2(
                {p: truth[p][sersic_bright & ~neighbours] for p in PARAMETERS}, subset(sersic_bright & ~neighbours)
            ),
            "labels_with_neighbours": _r2(pool_labels[neighbours], subset(neighbours)),
            "labels_isolated": _r2(pool_labels[~neighbours], subset(~neighbours)),
            "validation_table1_h23": _r2(val_labels[bright_val], {p: val_est[p][bright_val] for p in PARAMETERS}),
        }
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "note": "accuracy only: no timing"},
        "isolated": args.isolated,
        "blended": args.blended,
        "pool": args.pool,
        "validation": args.validation,
        "counts": {
            "pool": len(pool),
            "pool_with_neighbours": int(neighbours.sum()),
            "pool_sersic_h23": {
                "with_neighbours": int((sersic_bright & neighbours).sum()),
                "isolated": int((sersic_bright & ~neighbours).sum()),
            },
            "validation_h23": int(bright_val.sum()),
        },
        "rules": rules,
    }
    Path(args.report).write_text(json.dumps(report, indent=2))
    for name, rule in rules.items():
        print(name, rule["validation_routed"], rule["truth_sersic_with_neighbours_h23"], rule["validation_table1_h23"])


if __name__ == "__main__":
    main()
