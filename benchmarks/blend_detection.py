"""How well, and how fast, are stamps with neighbours told from isolated ones?

Two detectors, both run on one core:

- the photutils segmentation the classical labels use
  (:func:`legato.analysis.segmentation.segment_stamp`) on the realistic test A,
  whose simulation records how many neighbours each stamp holds
  (``n_neighbours``): a stamp is called blended when another segment comes
  within ``radius`` pixels of the target's segment (recall, precision, speed);
- the batched in-stamp detector of every inference path
  (:func:`legato.io.stamp_checks.blend_measurements`: the ``BLENDED`` flag and
  the ``neighbour_fraction`` column), scored (a) against the exact truth of
  scenes composed like the scene training's (:mod:`legato.training.scenes`)
  from the noiseless validation library, the target and its neighbours kept
  apart so that the neighbours' true share of the 1" aperture flux is known;
  (b) on the realistic test A (truth: ``n_neighbours > 0``, neighbours anywhere
  in the stamp); (c) for speed on at least 30,000 stamps.

::

    taskset -c 1 python benchmarks/blend_detection.py --out reports/blend_detection.json
    taskset -c 1 python benchmarks/blend_detection.py --skip-photutils   # keep the photutils rows of --out
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RADII_PIX = (0, 2, 4, 8, 16, 64)  # 64: anywhere in the 64x64 stamp
TRUTH_FRACTIONS = (0.02, 0.05, 0.10)  # a stamp is truly blended when the neighbours' share of the aperture flux reaches this
MAG_BINS = (18.0, 22.0, 23.5, 24.5, 26.0)
SPEED_STAMPS = 30_000
SEED = 20261203


def nearest_neighbour_gap(segmentation) -> float:
    """Pixels between the target's segment and the nearest other segment (inf: none; nan: no target)."""
    from scipy.ndimage import distance_transform_edt

    labels, target = segmentation.labels, segmentation.target
    if target == 0:
        return float("nan")
    others = (labels > 0) & (labels != target)
    if not others.any():
        return float("inf")
    return float(distance_transform_edt(labels != target)[others].min())


def photutils_report(stamps: np.ndarray, truth: np.ndarray) -> dict:
    """The photutils segmentation as a blend detector on the realistic stamps (per radius, and its speed)."""
    from legato.analysis.segmentation import segment_stamp

    began = time.perf_counter()
    gaps = np.array([nearest_neighbour_gap(segment_stamp(stamp)) for stamp in stamps])
    seconds = time.perf_counter() - began
    rows = []
    for radius in RADII_PIX:
        flagged = gaps <= radius
        hits = int(np.sum(flagged & truth))
        rows.append(
            {
                "radius_pix": radius,
                "flagged": int(flagged.sum()),
                "recall": round(hits / max(1, int(truth.sum())), 3),
                "precision": round(hits / max(1, int(flagged.sum())), 3),
            }
        )
    return {
        "what": "photutils segmentation of the labels (analysis.segmentation.segment_stamp) as a blend detector on realistic test A",
        "stamps": len(stamps),
        "with_neighbours": int(truth.sum()),
        "no_target_found": int(np.isnan(gaps).sum()),
        "by_radius": rows,
        "stamps_per_second_one_core": round(len(stamps) / seconds, 1),
    }


def composed_scenes(models: np.ndarray, bands: np.ndarray, scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each model once as a target (random symmetry) and its neighbours, as :func:`legato.training.scenes.compose_scenes` draws them.

    Returns
    -------
    tuple of numpy.ndarray
        ``(N, H, W)`` float32 targets, ``(N, H, W)`` float32 neighbours (their sum), ``(N,)`` neighbour counts.
    """
    from legato.symmetry import dihedral
    from legato.training.scenes import shift_into

    count = len(models)
    targets = dihedral(models, rng.integers(0, 8, count)).astype(np.float32)
    neighbours = np.zeros_like(targets)
    has = rng.random(count) < scene.neighbour_probability
    numbers = np.where(has, rng.integers(1, scene.max_neighbours + 1, count), 0)
    members = {b: np.flatnonzero(bands == b) for b in np.unique(bands)}
    low, high = scene.distance_pix
    for k in np.flatnonzero(numbers):
        pool = members[bands[k]]
        for _ in range(numbers[k]):
            other = int(pool[rng.integers(0, len(pool))])
            distance, angle = rng.uniform(low, high), rng.uniform(0, 2 * np.pi)
            image = dihedral(models[other : other + 1], rng.integers(0, 8, 1))[0]
            shift_into(neighbours[k], image, int(round(distance * np.sin(angle))), int(round(distance * np.cos(angle))))
    return targets, neighbours, numbers


def true_fraction(targets: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """The neighbours' exact share of the noiseless flux inside the 1" aperture."""
    from legato.io.stamp_checks import SOURCE_APERTURE_PIX, aperture_mask

    aperture = aperture_mask(targets.shape[-1], SOURCE_APERTURE_PIX)
    theirs = neighbours[:, aperture].sum(axis=1, dtype=np.float64)
    return theirs / (theirs + targets[:, aperture].sum(axis=1, dtype=np.float64))


def noisy_scenes(
    targets: np.ndarray, neighbours: np.ndarray, noise, depths, scene, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Survey noise (depths drawn from ``depths``) and sky residuals on the scenes; also returns the depth factors."""
    from legato.simulation.noise import survey_noise_realisation
    from legato.training.scenes import sky_residuals

    scale, correlation = depths.draw(len(targets), rng)
    stamps = survey_noise_realisation(targets + neighbours, noise, scale, correlation, rng)
    stamps += sky_residuals(stamps.shape, noise.sky_sigma * scale, scene, rng)
    return stamps, scale


def recall_precision(flagged: np.ndarray, truth: np.ndarray) -> dict:
    """Recall and precision of ``flagged`` against ``truth`` (booleans)."""
    hits = int(np.sum(flagged & truth))
    return {
        "truly_blended": int(truth.sum()),
        "recall": round(hits / max(1, int(truth.sum())), 3),
        "precision": round(hits / max(1, int(flagged.sum())), 3),
    }


def fraction_errors(estimate: np.ndarray, truth: np.ndarray) -> dict:
    """Median and central-68% range of ``estimate - truth``, and the median absolute error."""
    error = estimate - truth
    low, median, high = np.percentile(error, [15.865, 50, 84.135])
    return {
        "stamps": len(error),
        "median_error": round(float(median), 4),
        "error_68": [round(float(low), 4), round(float(high), 4)],
        "median_abs_error": round(float(np.median(np.abs(error))), 4),
    }


def scene_scores(fraction: np.ndarray, blended: np.ndarray, truth: np.ndarray, mags: np.ndarray) -> dict:
    """Recall/precision of ``blended`` against each truth threshold, and the fraction's errors, overall and by target magnitude."""
    ok = np.isfinite(fraction)
    out = {
        "stamps": int(len(fraction)),
        "flagged": int(blended.sum()),
        "not_measured": int((~ok).sum()),
        "by_truth_fraction": {f"{t:.2f}": recall_precision(blended, truth >= t) for t in TRUTH_FRACTIONS},
        "isolated_flagged": round(float(blended[truth == 0].mean()), 4),
        "fraction_error": fraction_errors(fraction[ok], truth[ok]),
        "fraction_error_truly_blended": fraction_errors(fraction[ok & (truth >= 0.02)], truth[ok & (truth >= 0.02)]),
        "by_target_mag": [],
    }
    for low, high in zip(MAG_BINS[:-1], MAG_BINS[1:]):
        rows = (mags >= low) & (mags < high)
        if rows.sum() < 50:
            continue
        entry = {"mag": [low, high], "stamps": int(rows.sum())}
        entry.update(recall_precision(blended[rows], truth[rows] >= 0.02))
        entry["fraction_median_abs_error"] = round(float(np.median(np.abs(fraction[rows & ok] - truth[rows & ok]))), 4)
        out["by_target_mag"].append(entry)
    return out


def one_core() -> str:
    """Pin this process to one core (the one it runs on when several are allowed) and name it."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) > 1:
        os.sched_setaffinity(0, {allowed[-1]})
    return f"core {sorted(os.sched_getaffinity(0))[0]} only (os.sched_setaffinity)"


def speed(stamps: np.ndarray, repeats: int = 3) -> float:
    """Best-of-``repeats`` stamps/s of :func:`blend_measurements` on ``stamps``."""
    from legato.io.stamp_checks import blend_measurements

    best = np.inf
    for _ in range(repeats):
        began = time.perf_counter()
        blend_measurements(stamps)
        best = min(best, time.perf_counter() - began)
    return len(stamps) / best


def detector_report(args) -> dict:
    """Scores of :func:`blend_measurements` on composed scenes and on the realistic test A, and its speed."""
    from legato.config import load_params
    from legato.io import stamp_checks as checks
    from legato.io.stamps import load_split, read_stamp_set
    from legato.training.noise_aware import noiseless_set_noise
    from legato.training.noisy_batches import DepthRange
    from legato.training.scenes import SceneModel

    section = load_params(args.params)["scenes"]
    depths = DepthRange(**{k: tuple(v) for k, v in section["depths"].items()})
    scene = SceneModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in section["scenes"].items()})
    models, labels, header = load_split(args.library, limit=args.limit)
    noise = noiseless_set_noise(header, args.library)
    rng = np.random.default_rng(SEED)
    targets, neighbours, numbers = composed_scenes(models, np.asarray(labels["band"]), scene, rng)
    truth = true_fraction(targets, neighbours)
    stamps, _ = noisy_scenes(targets, neighbours, noise, depths, scene, rng)
    fraction, blended = checks.blend_measurements(stamps)
    scenes = scene_scores(fraction, blended, truth, np.asarray(labels["mag"], dtype=float))
    scenes["with_neighbours"] = int((numbers > 0).sum())
    scenes["what"] = (
        f"{len(stamps)} scenes of {args.library} (each model once as target, neighbours as params.yaml scenes.scenes, "
        "depths scenes.depths, sky residuals), truth from the noiseless target and neighbour images"
    )

    realistic, realistic_labels, _ = read_stamp_set(args.test)
    has = np.asarray(realistic_labels["n_neighbours"]) > 0
    r_fraction, r_blended = checks.blend_measurements(realistic)
    kinds = np.asarray(realistic_labels["kind"])
    test_a = {
        "what": f"{args.test}: truth n_neighbours > 0 (neighbours anywhere in the stamp)",
        "stamps": len(realistic),
        "with_neighbours": int(has.sum()),
        "flagged": int(r_blended.sum()),
        **{k: v for k, v in recall_precision(r_blended, has).items() if k != "truly_blended"},
        "isolated_flagged_by_kind": {k: round(float(r_blended[(kinds == k) & ~has].mean()), 3) for k in np.unique(kinds)},
        "median_fraction_with_neighbours": round(float(np.nanmedian(r_fraction[has])), 4),
        "median_fraction_isolated": round(float(np.nanmedian(r_fraction[~has])), 4),
    }

    cube = np.concatenate([stamps] * int(np.ceil(SPEED_STAMPS / len(stamps))))[: max(SPEED_STAMPS, len(stamps))]
    rate = speed(cube)
    thresholds = {
        name: getattr(checks, name)
        for name in dir(checks)
        if name.startswith("BLEND_") and isinstance(getattr(checks, name), (int, float)) and name != "BLEND_CHUNK"
    }
    return {
        "what": "io.stamp_checks.blend_measurements (BLENDED flag, neighbour_fraction), batched numpy + scipy.ndimage",
        "thresholds": thresholds,
        "scenes": scenes,
        "realistic_A": test_a,
        "speed": {"stamps": len(cube), "stamps_per_second_one_core": round(rate, 1), "target_stamps_per_second": 10_000},
    }


def print_table(report: dict) -> None:
    """A short text summary."""
    det = report["detector"]
    print("in-stamp detector (io.stamp_checks.blend_measurements) on composed scenes:")
    print(f"  {'truth fraction >=':>18} {'recall':>7} {'precision':>9}")
    for key, row in det["scenes"]["by_truth_fraction"].items():
        print(f"  {key:>18} {row['recall']:>7} {row['precision']:>9}")
    err = det["scenes"]["fraction_error"]
    print(f"  neighbour_fraction error: median {err['median_error']}, 68% {err['error_68']}, median |error| {err['median_abs_error']}")
    a = det["realistic_A"]
    print(f"  realistic A (neighbours anywhere): recall {a['recall']} precision {a['precision']} ({a['flagged']} flagged)")
    print(f"  speed: {det['speed']['stamps_per_second_one_core']} stamps/s on one core ({report['core']})")
    photutils = report.get("photutils")
    if photutils:
        print(f"photutils segmentation (realistic A): {photutils['stamps_per_second_one_core']} stamps/s")
        for row in photutils["by_radius"]:
            print(f"  r={row['radius_pix']:>3}  recall {row['recall']}  precision {row['precision']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=Path, default=Path("datasets/realistic/labelled/A"))
    parser.add_argument("--library", type=Path, default=Path("datasets/bands/val"))
    parser.add_argument("--limit", type=int, default=None, help="Only the first LIMIT models of the library as targets.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports/blend_detection.json"))
    parser.add_argument("--skip-photutils", action="store_true", help="Keep the photutils rows of --out instead of re-measuring them.")
    args = parser.parse_args()
    from legato.io.stamps import read_stamp_set
    from legato.reports import machine_description

    core = one_core()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.skip_photutils:
        photutils = previous.get("photutils") or {
            k: previous[k] for k in previous if k not in ("machine", "note", "inference_target_stamps_per_second")
        }
        photutils = photutils or None
    else:
        stamps, labels, _ = read_stamp_set(args.test)
        photutils = photutils_report(stamps, np.asarray(labels["n_neighbours"]) > 0)
    report = {
        "photutils": photutils,
        "detector": detector_report(args),
        "inference_target_stamps_per_second": 1500,
        "core": core,
        "machine": machine_description(),
        "note": "measured beside a training on the other core: a lower bound on the idle speed",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


if __name__ == "__main__":
    main()
