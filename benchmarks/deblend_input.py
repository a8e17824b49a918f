"""Benchmark: what should a network see of a crowded stamp: the stamp as cut, or the stamp with its neighbours removed?

Issue 27 asks to decide by measurement between a mask channel, a deblended input and
no explicit mask. A mask channel needs a network trained with it (hours); the two
others run on the published networks. For each estimator and input, realistic test A
is scored against the classical labels (isolated stamps and stamps with neighbours)
and its Sérsic galaxies against the simulated truth (H < 23), and the simulated test
set's Table 1 (H <= 23) checks what deblending does to isolated galaxies. Inputs:

- ``raw``: the stamp as cut (what every estimator saw before);
- ``grow<k>``: the neighbours the blend detector maps (``blend_measurements(with_map=True)``)
  grown by k pixels and replaced (:mod:`legato.io.deblend`: point-mirror, else sky noise).

Writes reports/deblend_input.json (~4 min on 2 cores).

    python benchmarks/deblend_input.py
    python benchmarks/deblend_input.py --estimator refined=models/refined_tracked --grow 0 2 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PARAMETERS = ("mag", "re_arcsec", "n", "ellipticity")


def _table1(estimator, stamps, labels, inputs: dict, limit: float = 23.0) -> dict:
    from legato.stats import r2_score

    bright = np.asarray(labels["mag"]) <= limit
    out = {}
    for key, (x, blend) in inputs.items():
        rows = estimator.predict(x, blend=blend)
        out[key] = {p: round(float(r2_score(np.asarray(labels[p])[bright], np.asarray(rows[p])[bright])), 4) for p in PARAMETERS}
    return out


def _inputs(stamps: np.ndarray, grows: list[int]) -> tuple[dict, dict]:
    """Each input variant with the blend measurements of the stamps as cut, and how many stamps each changed."""
    from legato.io.stamp_checks import blend_measurements
    from legato.models.deblending import deblended_inputs

    fraction, blended, neighbour_map = blend_measurements(stamps, with_map=True)
    inputs = {"raw": (stamps, (fraction, blended))}
    for grow in grows:
        inputs[f"grow{grow}"] = (deblended_inputs(stamps, neighbour_map, grow), (fraction, blended))
    return inputs, {"flagged_blended": int(blended.sum()), "with_neighbour_pixels": int(neighbour_map.any(axis=(1, 2)).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--estimator",
        action="append",
        default=None,
        help="name=folder (default: refined=models/refined_tracked, scenes=models/scenes_tracked)",
    )
    parser.add_argument("--grow", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--test-a", type=Path, default=REPO / "datasets/realistic/labelled/A")
    parser.add_argument("--simulated", type=Path, default=REPO / "datasets/simulated/test")
    parser.add_argument("--out", type=Path, default=REPO / "reports/deblend_input.json")
    args = parser.parse_args()

    from legato.evaluation.truth import score_test_a
    from legato.io.stamps import read_stamp_set
    from legato.models.estimator import LoadedEstimator
    from legato.options import parse_mapping

    folders = parse_mapping(args.estimator or ["refined=models/refined_tracked", "scenes=models/scenes_tracked"], "--estimator")
    start = time.perf_counter()
    stamps, labels, _ = read_stamp_set(args.test_a)
    inputs, counts = _inputs(stamps, args.grow)
    sim_stamps, sim_labels, _ = read_stamp_set(args.simulated)
    sim_inputs, sim_counts = _inputs(sim_stamps, args.grow)
    results, table1 = {}, {}
    for name, folder in folders.items():
        estimator = LoadedEstimator(REPO / folder)
        estimates = {key: estimator.predict(x, blend=blend) for key, (x, blend) in inputs.items()}
        report = score_test_a(labels, estimates)
        results[name] = {
            key: {
                "labels_with_neighbours": report["against_labels"][key]["with_neighbours"]["r2"],
                "labels_isolated": report["against_labels"][key]["isolated"]["r2"],
                "labels_all": report["against_labels"][key]["all"]["r2"],
                "truth_sersic_with_neighbours_h23": report["against_truth"][key]["sersic_with_neighbours_h23"]["r2"],
                "truth_sersic_isolated_h23": report["against_truth"][key]["sersic_isolated_h23"]["r2"],
            }
            for key in estimates
        }
        table1[name] = _table1(estimator, sim_stamps, sim_labels, sim_inputs)
        print(name, json.dumps(results[name], indent=1), json.dumps(table1[name]), flush=True)
    counts_a = {"test_a": counts, "simulated_test": sim_counts}
    summary = {
        "test_a": str(args.test_a.relative_to(REPO) if args.test_a.is_relative_to(REPO) else args.test_a),
        "counts": {**counts_a, "test_a_with_neighbours": int(np.sum(np.asarray(labels["n_neighbours"]) > 0))},
        "classical_labels_against_truth_sersic_with_neighbours_h23": score_test_a(labels, {})["against_truth"]["classical_labels"][
            "sersic_with_neighbours_h23"
        ]["r2"],
        "realistic_test_a": results,
        "table1_h23": table1,
        "seconds": round(time.perf_counter() - start, 1),
        "command": "python benchmarks/deblend_input.py"
        + ("" if args.estimator is None else "".join(f" --estimator {e}" for e in args.estimator))
        + ("" if args.grow == [0, 2, 4] else " --grow " + " ".join(map(str, args.grow))),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
