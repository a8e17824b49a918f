"""Benchmark: the exact-model refit of bright stamps (``legato predict --refit-brighter-than``), against the truth and the bound.

The network is far from the Cramér-Rao bound only at the bright end, where the training prior
holds few galaxies. ``--refit-brighter-than MAG`` refits every stamp whose estimate is brighter
than MAG (and not ``BLENDED``) by maximum likelihood with the simulator's PSF-convolved Sérsic
model, started from the estimate (:mod:`legato.modelling.refit`). This scores it on the Table 1
test set (``datasets/simulated/test`` with its bounds) and, with ``--bright``, on a bright set
(``benchmarks/bright_end.py`` draws one; 234 galaxies at H 19-20 instead of Table 1's 22), for
each estimator pass count (``--symmetries``) and each refit limit (``--limits``), through the
code ``legato predict`` runs (:class:`legato.inference.measurements.AugmentedEstimator`, two
worker processes): R² at H <= 23 and 24.5, RMSE / CRB per 1-mag bin, coverage of the truth by
the intervals (the refit's are its formal errors), the share of rows refitted, and the time.
The refit limits share one refit: a row's refit depends only on its own estimate.

With ``--test-a``, the adapted estimator (``--adapted``) on the labelled realistic test A, refit
below ``--test-a-limits`` (non-``BLENDED`` stamps only): Table 2 against the classical labels,
the stamps the estimator flags isolated, coverage of the labels, and the Sérsic galaxies against
the simulated truth (:func:`legato.evaluation.truth.score_test_a`).

The bright set is drawn as ``benchmarks/bright_end.py`` draws it (~4 min)::

    legato simulate --mag-min 19 --mag-max 21 --train 1 --val 1 --test 2000 --seed 20261207 --out /tmp/bright/stamps
    legato crb --stamps /tmp/bright/stamps/test --out /tmp/bright/crb.fits
    python benchmarks/refit.py --bright /tmp/bright/stamps/test --bright-bounds /tmp/bright/crb.fits \
        --test-a datasets/realistic/labelled/A      # ~16 min on 2 cores
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

from tta import MOMENTS_CLASSICAL_H23, bins_over_target, coverage  # noqa: E402


def refit_rows(estimates: dict, refitted: dict, limit: float, skip_flags: int = 0) -> dict:
    """The catalogue a refit limit gives: the refit where the estimate was brighter than ``limit``, its flags
    share no bit with ``skip_flags`` (``BLENDED``: the refit without ``--refit-blended``) and the refit held."""
    use = (np.asarray(estimates["mag"], float) < limit) & (np.asarray(refitted["refit"], float) == 1)
    if skip_flags:
        use &= (np.asarray(estimates["flags"]).astype(np.int64) & skip_flags) == 0
    rows = {c: np.where(use, np.asarray(refitted[c]), np.asarray(estimates[c])) if c in estimates else refitted[c] for c in refitted}
    return {**rows, "refit": use.astype(float)}


def score(truth, estimates: dict, bounds, mag_bins) -> dict:
    """R² (H <= 23, 24.5), RMSE / CRB per bin and coverage of the truth of one catalogue."""
    from legato.evaluation.efficiency import efficiency_report
    from legato.stats import r2_table

    mag = np.asarray(truth["mag"], float)
    binned = efficiency_report(truth, {"estimator": estimates}, bounds, {"all": 99.0}, mag_bins)["binned"]["estimator"]
    r2 = {
        name: {p: round(v, 5) for p, v in r2_table(truth[mag <= cut], {k: np.asarray(v)[mag <= cut] for k, v in estimates.items()}).items()}
        for name, cut in (("h23", 23.0), ("h245", 24.5))
        if np.any(mag <= cut)
    }
    refitted = np.asarray(estimates.get("refit", np.zeros(len(mag))), float) == 1
    return {
        "r2": r2,
        "rmse_over_crb": {
            p: [(row["mag_lo"], None if row["ratio"] is None else round(row["ratio"], 2)) for row in rows if row["count"]]
            for p, rows in binned.items()
        },
        "rmse_over_crb_bins_over_2": bins_over_target(binned),
        "coverage_against_truth": coverage(truth, estimates),
        "coverage_of_refitted_rows": coverage(truth[refitted], {k: np.asarray(v)[refitted] for k, v in estimates.items()})
        if refitted.any()
        else None,
        "refitted": int(refitted.sum()),
        **(
            {"table1_at_least_moments_classical": {p: r2["h23"][p] >= MOMENTS_CLASSICAL_H23[p] for p in MOMENTS_CLASSICAL_H23}}
            if "h23" in r2
            else {}
        ),
    }


def refit_catalogue(estimates: dict, stamps, folder: Path, limit: float, workers: int, blended: bool = False) -> tuple[dict, float]:
    """``estimates`` with the stamps brighter than ``limit`` (``BLENDED`` ones too with ``blended``) refit with
    the set's noise, and the seconds it took."""
    from legato.evaluation.crb_catalogue import stamp_set_noise
    from legato.inference.measurements import AugmentedEstimator, RefitAugmentation
    from legato.modelling.renderer import ModelRenderer
    from legato.simulation.psf import read_psf_image

    noise = stamp_set_noise(folder)
    psf = read_psf_image(REPO / "data/psf/wfc3ir_f160w_psf.fits", expected_pixel_scale=noise["pixel_scale"]).galsim_profile()
    renderer = ModelRenderer(psf, noise["size"], noise["pixel_scale"], noise["zeropoint"])
    refit = RefitAugmentation(renderer, limit, noise["exposure_time"], blended=blended)
    with AugmentedEstimator(None, [refit], workers=workers) as augmented:
        start = time.perf_counter()
        refitted = augmented.augment(estimates, stamps)
        return refitted, time.perf_counter() - start


def network_estimates(estimator: Path, symmetries: int, stamps) -> dict:
    """An estimator's catalogue columns of ``stamps`` as arrays."""
    from legato.models.estimator import LoadedEstimator

    estimates = LoadedEstimator(estimator, symmetries).predict(stamps)
    return {c: np.asarray(estimates[c]) for c in (getattr(estimates, "colnames", None) or estimates)}


def evaluate_test_a(folder: Path, args) -> dict:
    """The adapted estimator on test A, refit below each of ``args.test_a_limits``: against the labels and the truth."""
    from legato.evaluation.truth import score_test_a
    from legato.io.stamps import read_stamp_set

    stamps, labels, _ = read_stamp_set(folder)
    report: dict = {"estimator": str(args.adapted), "stamps": len(stamps), "symmetries": {}}
    for count in args.symmetries:
        estimates = network_estimates(args.adapted, count, stamps)
        refitted, seconds = refit_catalogue(estimates, stamps, folder, max(args.test_a_limits), args.workers)
        catalogues = {
            "network": estimates,
            **{f"refit_brighter_than_{limit:g}": refit_rows(estimates, refitted, limit) for limit in args.test_a_limits},
        }
        scores = score_test_a(labels, catalogues)
        entry: dict = {"refit_seconds": round(seconds, 1)}
        for name, catalogue in catalogues.items():
            against, truth = scores["against_labels"][name], scores["against_truth"][name]
            entry[name] = {
                "refitted": int(np.sum(np.asarray(catalogue.get("refit", np.zeros(1)), float) == 1)),
                "labels_all": against["all"]["r2"],
                "labels_flagged_isolated": against["flagged_isolated"]["r2"],
                "coverage_flagged_isolated": against["flagged_isolated"]["coverage"],
                "truth_sersic_isolated_h23": truth["sersic_isolated_h23"]["r2"],
                "truth_sersic_isolated_all": truth["sersic_isolated"]["r2"],
                "coverage_of_the_truth_sersic_isolated": truth["sersic_isolated"].get("coverage"),
            }
        report["symmetries"][str(count)] = entry
        print("test_a", count, json.dumps({k: v["labels_all"] for k, v in entry.items() if isinstance(v, dict)}), flush=True)
    return report


def evaluate_set(name: str, folder: Path, bounds_path: Path, args, mag_bins, symmetries) -> dict:
    """Every pass count of ``symmetries`` and refit limit on one simulated set."""
    from astropy.table import Table

    from legato.evaluation.crb_catalogue import stamp_set_noise
    from legato.evaluation.efficiency import aligned_bounds
    from legato.io.stamps import load_split

    stamps, truth, _ = load_split(folder)
    bounds = aligned_bounds(Table.read(bounds_path), truth["id"])
    report: dict = {"stamps": len(stamps), "noise": stamp_set_noise(folder), "symmetries": {}}
    for count in symmetries:
        estimates = network_estimates(args.estimator, count, stamps)
        refitted, seconds = refit_catalogue(estimates, stamps, folder, max(args.limits), args.workers)
        tried = int(np.sum(np.asarray(estimates["mag"], float) < max(args.limits)))
        entry = {
            "network": score(truth, estimates, bounds, mag_bins),
            "refit_seconds": round(seconds, 1),
            "refit_tried": tried,
            "seconds_per_tried_stamp_per_worker": round(seconds * args.workers / max(tried, 1), 3),
        }
        for limit in sorted(args.limits):
            entry[f"refit_brighter_than_{limit:g}"] = score(truth, refit_rows(estimates, refitted, limit), bounds, mag_bins)
        report["symmetries"][str(count)] = entry
        print(name, count, json.dumps({k: v.get("r2", {}).get("h23") if isinstance(v, dict) else v for k, v in entry.items()}), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", type=Path, default=Path("models/refined_tracked"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--bounds", type=Path, default=Path("datasets/crb/test.fits"))
    parser.add_argument("--bright", type=Path, default=None, help="a bright simulated set (benchmarks/bright_end.py draws one)")
    parser.add_argument("--bright-bounds", type=Path, default=None)
    parser.add_argument("--symmetries", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--bright-symmetries", type=int, nargs="+", default=[1], help="pass counts on the bright set (2,000 refits each)")
    parser.add_argument("--limits", type=float, nargs="+", default=[21.0, 23.0])
    parser.add_argument("--test-a", type=Path, default=None, help="also the labelled realistic test A with --adapted")
    parser.add_argument("--adapted", type=Path, default=Path("models/adapted_scenes"))
    parser.add_argument("--test-a-limits", type=float, nargs="+", default=[23.0, 99.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/refit.json"))
    args = parser.parse_args()

    from legato.config import load_params
    from legato.reports import machine_description

    mag_bins = load_params(REPO / "params.yaml")["crb"]["mag_bins"]
    report: dict = {"estimator": str(args.estimator), "limits": args.limits, "machine": machine_description(), "workers": args.workers}
    report["table1_test"] = evaluate_set("table1", args.test, args.bounds, args, mag_bins, args.symmetries)
    if args.bright is not None:
        report["bright_set"] = evaluate_set("bright", args.bright, args.bright_bounds, args, mag_bins, args.bright_symmetries)
    if args.test_a is not None:
        report["test_a"] = evaluate_test_a(args.test_a, args)
    report["targets"] = {"table1_h23": MOMENTS_CLASSICAL_H23, "rmse_over_crb": "<= 2 from H = 19 to 24.5"}
    report["command"] = "python " + shlex.join(sys.argv)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
