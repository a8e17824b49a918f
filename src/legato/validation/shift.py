"""The domain-shift suite: distribution expectations on the summary statistics, calibrated on simulations.

Great Expectations 1.x has no profilers, so the project computes the partitions
and thresholds itself: the KL-divergence partitions are the training set's
5-percent quantile bins; the thresholds come from bootstrap batches of a
separate clean set (the validation split) of the size that will be checked.
A batch drawn from the training distribution passes every expectation with a
wide margin; a batch whose statistics moved fails the ones that moved.
"""

from __future__ import annotations

import numpy as np

SHIFT_STATISTICS = (
    "background",
    "noise_sigma",
    "mag_aperture",
    "peak_snr",
    "half_light_radius",
    "concentration",
    "ellipticity_moments",
    "centroid_offset",
    "border_flux_fraction",
)
QUANTILES = (0.1, 0.5, 0.9)
N_SIGMA = 5.0  # half-width of the mean and quantile ranges, in bootstrap sigma
KL_MARGIN = 1.5  # threshold = margin x the largest bootstrap KL divergence (+ KL_FLOOR)
KL_FLOOR = 0.01
TAIL_WEIGHT = 0.01
SIGMA_FLOOR_IQR = 0.02
MAX_KURTOSIS_FOR_MEAN = 10.0  # heavy-tailed statistics get no mean expectation (a few bright galaxies swing it)


def kurtosis(values) -> float:
    """Excess kurtosis (0 for a Gaussian)."""
    values = _finite(values)
    centred = values - values.mean()
    variance = np.mean(centred**2)
    return float(np.mean(centred**4) / variance**2 - 3.0) if variance > 0 else 0.0


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def partition(reference, n_bins: int | None = None) -> dict:
    """GX partition object (quantile bins, their reference weights) of one statistic.

    By default 20 bins, fewer for small references (at least 50 reference values per bin).
    """
    values = _finite(reference)
    n_bins = n_bins or int(np.clip(values.size // 50, 4, 20))
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    counts, _ = np.histogram(values, bins=edges)
    return {"bins": edges.tolist(), "weights": (counts / counts.sum()).tolist()}


def _bootstrap(values: np.ndarray, batch_size: int, n_boot: int, rng) -> np.ndarray:
    return np.stack([rng.choice(values, size=batch_size, replace=True) for _ in range(n_boot)])


def build_shift_suite(reference: dict, calibration: dict, batch_size: int, validator, n_boot: int = 30, seed: int = 0) -> dict:
    """The ``domain_shift`` suite for batches of ``batch_size`` stamps.

    Parameters
    ----------
    reference : dict of str to numpy.ndarray
        Summary statistics of the training set (partitions, centres).
    calibration : dict of str to numpy.ndarray
        Summary statistics of a separate clean set (bootstrap spreads, KL thresholds).
    batch_size : int
        Size of the batches the suite will judge.
    validator : legato.validation.gx.Validator
        Runs the KL expectations on the bootstrap batches (thresholds measured with GX itself).
    n_boot : int
        Bootstrap batches.
    seed : int
        Random seed.

    Returns
    -------
    dict
        Suite JSON (``name``, ``meta`` with the calibration, ``expectations``).
    """
    rng = np.random.default_rng(seed)
    partitions = {s: partition(reference[s]) for s in SHIFT_STATISTICS}
    kl = bootstrap_kl(partitions, calibration, batch_size, validator, n_boot, rng)
    expectations, calibration_meta = [], {}
    for s in SHIFT_STATISTICS:
        checks, calibration_meta[s] = statistic_expectations(s, reference[s], calibration[s], partitions[s], kl[s], batch_size, n_boot, rng)
        expectations += checks
    return {
        "name": "domain_shift",
        "meta": {
            "about": "Distribution of the per-stamp summary statistics against the simulated training set "
            f"(batches of {batch_size}); built by `legato build-reference`.",
            "batch_size": batch_size,
            "n_bootstrap": n_boot,
            "n_sigma": N_SIGMA,
            "kl_margin": KL_MARGIN,
            "statistics": calibration_meta,
        },
        "expectations": expectations,
    }


def bootstrap_kl(partitions: dict, calibration: dict, batch_size: int, validator, n_boot: int, rng) -> dict[str, list[float]]:
    """KL divergence of ``n_boot`` bootstrap batches of the clean calibration set from each statistic's partition (measured with GX)."""
    import pandas as pd

    probe = {
        "name": "kl_calibration",
        "expectations": [
            {
                "type": "expect_column_kl_divergence_to_be_less_than",
                "kwargs": {"column": s, "partition_object": partitions[s], "threshold": 1e9, "tail_weight_holdout": TAIL_WEIGHT},
            }
            for s in SHIFT_STATISTICS
        ],
    }
    index = np.arange(len(calibration[SHIFT_STATISTICS[0]]))
    kl = {s: [] for s in SHIFT_STATISTICS}
    for k in range(n_boot):
        rows = rng.choice(index, size=batch_size, replace=True)
        frame = pd.DataFrame({s: np.asarray(calibration[s], dtype=float)[rows] for s in SHIFT_STATISTICS})
        probe["name"] = f"kl_calibration_{k}"
        for outcome in validator.run(frame, probe).expectations:
            kl[outcome.column].append(float(outcome.observed))
    return kl


def statistic_expectations(s: str, reference, calibration, partition_object: dict, kl: list, batch_size: int, n_boot: int, rng):
    """The expectations guarding one statistic (KL, quantiles, and the mean where the tails allow) and their calibration."""
    ref, cal = _finite(reference), _finite(calibration)
    boots = _bootstrap(cal, batch_size, n_boot, rng)
    # floor: 2% of the reference IQR, so discrete statistics (radii on the pixel grid) get non-zero ranges
    floor = SIGMA_FLOOR_IQR * float(np.subtract(*np.quantile(ref, [0.75, 0.25])))
    # spread of a batch statistic (bootstrap, the mean also analytically) plus the reference's own uncertainty
    inflation = np.sqrt(1.0 + batch_size / ref.size)
    mean_spread = max(float(np.std(boots.mean(axis=1))), float(np.std(cal)) / np.sqrt(batch_size))
    mean_sigma = max(mean_spread * inflation, floor)
    quantile_sigma = np.maximum(np.std(np.quantile(boots, QUANTILES, axis=1), axis=1) * inflation, floor)
    ref_quantiles = np.quantile(ref, QUANTILES)
    threshold = KL_MARGIN * max(kl) + KL_FLOOR
    guards = f"a shift of {s} from the simulated training distribution"
    expectations = [
        {
            "type": "expect_column_kl_divergence_to_be_less_than",
            "meta": {"guards": guards},
            "kwargs": {"column": s, "partition_object": partition_object, "threshold": threshold, "tail_weight_holdout": TAIL_WEIGHT},
        },
        {
            "type": "expect_column_quantile_values_to_be_between",
            "meta": {"guards": guards},
            "kwargs": {
                "column": s,
                "quantile_ranges": {
                    "quantiles": list(QUANTILES),
                    "value_ranges": [[float(q - N_SIGMA * d), float(q + N_SIGMA * d)] for q, d in zip(ref_quantiles, quantile_sigma)],
                },
            },
        },
    ]
    mean_checked = bool(kurtosis(ref) < MAX_KURTOSIS_FOR_MEAN)
    if mean_checked:
        expectations.append(
            {
                "type": "expect_column_mean_to_be_between",
                "meta": {"guards": guards},
                "kwargs": {
                    "column": s,
                    "min_value": float(ref.mean() - N_SIGMA * mean_sigma),
                    "max_value": float(ref.mean() + N_SIGMA * mean_sigma),
                },
            }
        )
    meta = {
        "mean_checked": mean_checked,
        "excess_kurtosis": float(kurtosis(ref)),
        "reference_mean": float(ref.mean()),
        "mean_sigma": mean_sigma,
        "reference_median": float(ref_quantiles[1]),
        "median_sigma": float(quantile_sigma[1]),
        "bootstrap_kl_max": float(max(kl)),
        "kl_threshold": threshold,
    }
    return expectations, meta


def shift_table(suite: dict, outcomes, summary: dict) -> list[dict]:
    """Per statistic: what moved and by how much (median shift in bootstrap sigma, KL against threshold)."""
    failed = {}
    for outcome in outcomes:
        if not outcome.success:
            failed.setdefault(outcome.column, []).append(
                outcome.type.replace("expect_column_", "").replace("_to_be_between", "").replace("_to_be_less_than", "")
            )
    kl = {o.column: o.observed for o in outcomes if o.type == "expect_column_kl_divergence_to_be_less_than"}
    rows = []
    for s, meta in suite["meta"]["statistics"].items():
        values = _finite(summary[s])
        median = float(np.median(values)) if values.size else float("nan")
        rows.append(
            {
                "statistic": s,
                "median": median,
                "reference_median": meta["reference_median"],
                "median_shift_sigma": (median - meta["reference_median"]) / meta["median_sigma"]
                if meta["median_sigma"] > 0
                else float("nan"),
                "kl": kl.get(s),
                "kl_threshold": meta["kl_threshold"],
                "failed": failed.get(s, []),
            }
        )
    return rows
