"""Benchmark: the real F160W / F125W check (issue 24) with the exact-model refit, ``legato predict --refit-brighter-than``.

``legato real-check`` (DVC stage ``real_check``) scores the networks alone on the 15 real UDS galaxies in F160W and
F125W. This script scores the same estimators in three modes, on both bands, with the functions of that stage
(:func:`legato.evaluation.real_check.real_check` and :func:`~legato.evaluation.real_check.band_pairs`):

- ``network``: the estimator alone (the stage's values);
- ``refit``: ``--refit-brighter-than LIMIT``, the stamps not flagged ``BLENDED`` refit with the band's PSF and the
  set's zeropoint (``MAGZPT``);
- ``refit_blended``: ``--refit-blended`` too, every stamp brighter than LIMIT refit with the blend detector's
  neighbours masked: the GALFIT-comparable mode (a masked single-Sérsic fit, what GALFIT's catalogue is).

For each estimator and mode: the median Δmag (GALFIT - estimate) on each band's check sample and the median ratio of
(re_F125W / re_F160W) to GALFIT's, against issue 24's real-F125W targets (|median Δmag| <= 0.15, ratio within 5%).
Six galaxies are in both check samples: every configuration tried is reported, none is chosen here.

::

    python benchmarks/real_refit.py     # ~1 min on 2 cores -> reports/real_check_refit.json
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ESTIMATORS = {
    "adapted_routed": "models/adapted_routed",
    "adapted_scenes": "models/adapted_scenes",
    "deblended_scenes": "models/deblended_scenes_tracked",
    "refined_scenes": "models/refined_scenes_tracked",
}
MODES = ("network", "refit", "refit_blended")


def refit_on_band(estimator, band: str, zeropoint: float, limit: float, blended: bool, workers: int):
    """``estimator`` with the refit of ``legato predict --refit-brighter-than limit`` (``--refit-blended`` with
    ``blended``), rendered with ``band``'s PSF and the set's ``zeropoint``: an
    :class:`~legato.inference.measurements.AugmentedEstimator`, which ``real_check`` scores like the estimator."""
    from legato.commands.predict import augmentations_for
    from legato.inference.measurements import AugmentedEstimator
    from legato.modelling.renderer import renderer_from_psf_file
    from legato.simulation.psf import band_psf_path

    renderer = renderer_from_psf_file(band_psf_path(band), zeropoint=zeropoint)
    refit = augmentations_for(renderer, False, False, None, None, limit, blended)
    return AugmentedEstimator(estimator, refit, workers)


def _changed(value: float, network: float) -> bool:
    """Whether a row's value differs from the network's (two NaNs: no estimate in either, unchanged)."""
    return not (value == network or (math.isnan(value) and math.isnan(network)))


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write its report; returns the report."""
    from legato.evaluation.real_check import band_pairs, real_check
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.reports import machine_description, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", action="append", default=None, help="NAME=FOLDER (repeatable; default: four PSF-conditioned ones)")
    parser.add_argument("--reference", type=Path, default=Path("datasets/real/uds"), help="the F160W real set")
    parser.add_argument("--other-band", type=Path, default=Path("datasets/real/uds_f125w"), help="the same galaxies in F125W")
    parser.add_argument("--limit", type=float, default=24.5, help="the refit's magnitude limit (the check sample's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/real_check_refit.json"))
    args = parser.parse_args(argv)
    folders = dict(item.split("=", 1) for item in args.estimator) if args.estimator else DEFAULT_ESTIMATORS
    loaded = {name: LoadedEstimator(REPO / folder if not Path(folder).is_absolute() else folder) for name, folder in folders.items()}

    reports = {}
    for real in (args.reference, args.other_band):
        _, _, header = load_split(real)
        band, zeropoint = str(header.get("FILTER", "F160W")), float(header["MAGZPT"])
        wrapped = {
            f"{name}|{mode}": refit_on_band(estimator, band, zeropoint, args.limit, mode == "refit_blended", args.workers)
            for mode in MODES[1:]
            for name, estimator in loaded.items()
        }
        try:
            reports[band] = real_check({**{f"{name}|network": e for name, e in loaded.items()}, **wrapped}, real)
        finally:
            for estimator in wrapped.values():
                estimator.close()
    reference, other = reports["F160W"], next(r for b, r in reports.items() if b != "F160W")
    pairs = band_pairs(reference, other)
    summary = {}
    for key, pair in pairs["estimators"].items():
        name, mode = key.split("|")
        dmag = {band: report["estimators"][key]["median_error_check_sample"]["mag"] for band, report in reports.items()}
        refitted = {  # a converged refit replaces the estimate: the rows whose magnitude differs from the network's
            band: sum(_changed(g[key]["mag"], g[f"{name}|network"]["mag"]) for g in report["galaxies"] if g["in_check_sample"])
            for band, report in reports.items()
        }
        summary.setdefault(name, {})[mode] = {
            "median_dmag": dmag,
            "check_sample_rows_refit": refitted,
            "median_ratio_of_size_ratios": pair["median_ratio_of_size_ratios"],
            "median_colour_difference": pair["median_colour_difference"],
            "galaxies_in_both_check_samples": pair["n"],
            "target_abs_median_dmag_le_0.15": all(v is not None and abs(v) <= 0.15 for v in dmag.values()),
            "target_size_ratio_within_5pct": pair["target_size_ratio_within_5pct"],
        }
        print(f"{name:18s} {mode:14s} Δmag {dmag} ratio {pair['median_ratio_of_size_ratios']}", flush=True)
    report = {
        "command": shlex.join(["python", "benchmarks/real_refit.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_description(),
        "limit": args.limit,
        "estimators": folders,
        "summary": summary,
        "met_both": sorted(
            f"{name}|{mode}"
            for name, modes in summary.items()
            for mode, scores in modes.items()
            if scores["target_abs_median_dmag_le_0.15"] and scores["target_size_ratio_within_5pct"]
        ),
        "band_pairs": pairs,
        "bands": {band: {k: v for k, v in r.items() if k != "galaxies"} for band, r in reports.items()},
    }
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
