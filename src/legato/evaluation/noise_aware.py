"""The production estimator against its targets (``legato evaluate-production`` -> reports/production.json).

Four questions, each answered with numbers:

1. **Accuracy** on the Table 1 test set (the simulator's own noise), R² at
   H <= 23 and H <= 24.5, beside the methods of reports/table1.json.
2. **Noise robustness**: the same test galaxies at 0.25x, 0.5x, 1x and 2x the
   calibrated sky sigma, white and correlated (drizzle-like), each with one
   fixed noise realisation: R², and the median error in every 1-mag bin.
3. **Uncertainties**: coverage of the 68% and 95% intervals per parameter, per
   1-mag bin and per noise level; a reliability figure; the classical fitter's
   formal errors on the same test set when its catalogue has them.
4. **Real stamps**: the CANDELS UDS GALFIT blocks (labels: GALFIT; reported, not tuned on).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from legato.columns import COLUMN, ERROR_SUFFIXES, PARAMETERS
from legato.evaluation.real_check import real_check
from legato.models.uncertainty import covered, reliability_curve
from legato.stats import binned_statistics, r2_table

NOISE_LEVELS = (0.25, 0.5, 1.0, 2.0)
CORRELATIONS = {"white": 0.0, "correlated": 0.7}
ONE_MAG_BINS = (16.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 24.5)
COVERAGE_TARGETS = {"68": (0.65, 0.71), "95": (0.93, 0.97)}
FULL_RANGE_TARGET = {"mag": 0.997, "re": 0.97, "n": 0.93, "ellipticity": 0.96}
BIAS_TARGET = {"mag": 0.02, "re": 0.02}
MIN_BIN_COUNT = 20
LOG_PARAMETERS = frozenset({"re", "n"})


def interval_coverage(truth, estimates, suffix: str) -> dict[str, np.ndarray]:
    """Per parameter, whether each truth lies in ``estimate +/- <column><suffix>`` (log space for re and n)."""
    out = {}
    for p in PARAMETERS:
        name = COLUMN[p]
        true = np.asarray(truth[name], dtype=float)
        value = np.asarray(estimates[name], dtype=float)
        width = np.asarray(estimates[f"{name}{suffix}"], dtype=float)
        if p in LOG_PARAMETERS:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[p] = covered(np.log(true), np.log(value), width / value)
        else:
            out[p] = covered(true, value, width)
    return out


def coverage_by_bin(truth, estimates, edges=ONE_MAG_BINS, suffixes=None) -> dict:
    """Coverage of each interval level, per parameter: overall and per true-magnitude bin (bins with few galaxies marked)."""
    suffixes = suffixes or ERROR_SUFFIXES
    mag = np.asarray(truth["mag"], dtype=float)
    result = {}
    for level, suffix in suffixes.items():
        inside = interval_coverage(truth, estimates, suffix)
        result[level] = {}
        for p, hits in inside.items():
            bins = []
            for lo, hi in zip(edges[:-1], edges[1:]):
                members = (mag >= lo) & (mag < hi) if hi < edges[-1] else (mag >= lo) & (mag <= hi)
                bins.append({"mag_lo": lo, "mag_hi": hi, "count": int(members.sum()), "coverage": _fraction(hits[members])})
            result[level][p] = {"all": _fraction(hits), "bins": bins}
    return result


def _fraction(values) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def coverage_verdict(coverage: dict) -> dict:
    """Whether every bin with at least ``MIN_BIN_COUNT`` galaxies lies in the target interval; the worst bins."""
    verdict = {}
    for level, (low, high) in COVERAGE_TARGETS.items():
        values = [
            (b["coverage"], p, b["mag_lo"]) for p, rows in coverage[level].items() for b in rows["bins"] if b["count"] >= MIN_BIN_COUNT
        ]
        outside = [v for v in values if not low <= v[0] <= high]
        verdict[level] = {
            "target": [low, high],
            "met": not outside,
            "bins_checked": len(values),
            "bins_outside": len(outside),
            "min": min(v[0] for v in values) if values else None,
            "max": max(v[0] for v in values) if values else None,
        }
    return verdict


def subset_r2(truth, estimates, limits: dict) -> dict:
    """R² per parameter for each magnitude subset ``{name: mag_max}``."""
    mag = np.asarray(truth["mag"], dtype=float)
    out = {}
    for name, limit in limits.items():
        rows = mag <= limit
        out[name] = {p: round(v, 5) for p, v in r2_table(truth[rows], {k: np.asarray(v)[rows] for k, v in estimates.items()}).items()}
    return out


def bias_by_bin(truth, estimates, edges=ONE_MAG_BINS) -> dict:
    """Median error (true - estimate; relative for re and n) and scatter per 1-mag bin."""
    stats = binned_statistics(truth, estimates, list(edges))
    return {p: [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()} for row in rows] for p, rows in stats.items()}


def robustness_verdict(depths: dict, limits: dict) -> dict:
    """Targets of the noise study: |median| per bin (H <= 23, enough galaxies) and R² not worse at lower noise."""
    worst = {p: 0.0 for p in BIAS_TARGET}
    monotonic = True
    for levels in depths.values():
        reference = levels["1.0"]["r2"]["paper_h23"]
        for level, result in levels.items():
            for p in BIAS_TARGET:
                for row in result["bias"][p]:
                    if row["mag_hi"] <= limits["paper_h23"] and row["count"] >= MIN_BIN_COUNT and row["bias"] is not None:
                        worst[p] = max(worst[p], abs(row["bias"]))
            if float(level) < 1.0:
                monotonic &= all(result["r2"]["paper_h23"][p] >= reference[p] - 1e-4 for p in PARAMETERS)
    return {
        "worst_abs_median_error_h23": {p: round(v, 4) for p, v in worst.items()},
        "median_error_met": all(worst[p] <= BIAS_TARGET[p] for p in BIAS_TARGET),
        "lower_noise_not_worse": bool(monotonic),
    }


def reliability_figure(curves: dict, path: str | Path) -> Path:
    """Observed against nominal coverage, one panel per parameter, one line per noise set."""
    import matplotlib.pyplot as plt

    from legato.figures import save_figure

    fig, axes = plt.subplots(1, len(PARAMETERS), figsize=(4 * len(PARAMETERS), 4), sharey=True)
    for ax, p in zip(axes, PARAMETERS):
        ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--")
        for label, per_parameter in curves.items():
            nominal, observed = per_parameter[p]
            ax.plot(nominal, observed, lw=1.2, label=label)
        ax.set_title(p)
        ax.set_xlabel("nominal coverage")
    axes[0].set_ylabel("observed coverage")
    axes[-1].legend(fontsize=7, loc="upper left")
    fig.suptitle("Production estimator: reliability of the Gaussian intervals (test set)")
    return save_figure(fig, path)


def _curves(truth, estimates) -> dict:
    curves = {}
    for p in PARAMETERS:
        name = COLUMN[p]
        true, value = np.asarray(truth[name], float), np.asarray(estimates[name], float)
        sigma = np.asarray(estimates[f"{name}_err"], float)
        if p in LOG_PARAMETERS:
            true, sigma, value = np.log(true), sigma / value, np.log(value)
        curves[p] = reliability_curve(true, value, sigma)
    return curves


def classical_coverage(truth, catalogue) -> dict | None:
    """Coverage of the classical fitter's formal errors (``*_err`` as 1-sigma; 1.96 sigma for 95%), if it has them."""
    if catalogue is None or "mag_err" not in catalogue.colnames:
        return None
    ids = {int(i): k for k, i in enumerate(catalogue["id"])}
    rows = np.array([ids.get(int(i), -1) for i in truth["id"]])
    keep = rows >= 0
    truth = truth[keep]
    fitted = catalogue[rows[keep]]
    estimates = {}
    for p in PARAMETERS:
        name = COLUMN[p]
        estimates[name] = np.asarray(fitted[name], float)
        estimates[f"{name}_err"] = np.asarray(fitted[f"{name}_err"], float)
        estimates[f"{name}_err95"] = 1.96 * estimates[f"{name}_err"]
    ok = np.logical_and.reduce([np.isfinite(v) for v in estimates.values()])
    result = coverage_by_bin(truth[ok], {k: v[ok] for k, v in estimates.items()})
    return {"fitted": int(ok.sum()), "of": len(truth), "coverage": result, "verdict": coverage_verdict(result)}


def evaluate_production(
    estimator_dir: str | Path,
    noiseless_test: str | Path,
    table1_test: str | Path,
    real_dir: str | Path | None,
    reports: str | Path,
    limits: dict,
    classical_catalogue: str | Path | None = None,
    seed: int = 11,
    max_stamps: int | None = None,
) -> dict:
    """Write reports/production.json and the reliability figure; return the report.

    Parameters
    ----------
    estimator_dir : str or Path
        The production estimator folder.
    noiseless_test : str or Path
        Noiseless test set (the same galaxies as ``table1_test``).
    table1_test : str or Path
        The Table 1 test set (simulator's noise at the calibrated depth).
    real_dir : str or Path, optional
        Real labelled stamps (ingested GALFIT blocks).
    reports : str or Path
        Report folder (``production.json``, ``figures/production_reliability.png``).
    limits : dict
        Magnitude subsets ``{name: mag_max}`` (``paper_h23``, ``full_h245``).
    classical_catalogue : str or Path, optional
        Classical fits of the test set with formal errors (``*_err`` columns).
    seed : int
        Seed of the fixed noise realisations.
    max_stamps : int, optional
        Score only the first stamps (toy runs).
    """
    from astropy.table import Table

    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.training.noise_aware import noiseless_set_noise
    from legato.training.noisy_batches import noisy_copies

    reports = Path(reports)
    estimator = LoadedEstimator(estimator_dir)
    stamps, truth, _ = load_split(table1_test, max_stamps)
    values = estimator.predict(stamps)
    table1_block = {
        "r2": subset_r2(truth, values, limits),
        "bias": bias_by_bin(truth, values),
        "coverage": coverage_by_bin(truth, values),
    }
    table1_block["coverage_verdict"] = coverage_verdict(table1_block["coverage"])
    curves = {"Table 1 test set": _curves(truth, values)}

    models, model_truth, header = load_split(noiseless_test, max_stamps)
    noise = noiseless_set_noise(header, noiseless_test)
    depths = {}
    for label, correlation in CORRELATIONS.items():
        depths[label] = {}
        for k, level in enumerate(NOISE_LEVELS):
            noisy = noisy_copies(models, noise, level, correlation, seed=seed + 10 * k + (1 if correlation else 0))
            predicted = estimator.predict(noisy)
            coverage = coverage_by_bin(model_truth, predicted)
            depths[label][str(level)] = {
                "r2": subset_r2(model_truth, predicted, limits),
                "bias": bias_by_bin(model_truth, predicted),
                "coverage": coverage,
                "coverage_verdict": coverage_verdict(coverage),
                "flagged_input_out_of_range": round(float(np.mean((np.asarray(predicted["flags"]) & 128) > 0)), 4),
            }
            if correlation == 0.0:
                curves[f"{level}x sky sigma"] = _curves(model_truth, predicted)

    classical = None
    if classical_catalogue and Path(classical_catalogue).is_file():
        classical = classical_coverage(truth, Table.read(classical_catalogue))
    figure = reliability_figure(curves, reports / "figures" / "production_reliability.png")
    report = {
        "estimator": str(estimator_dir),
        "n_test": len(truth),
        "table1_test": table1_block,
        "depths": depths,
        "robustness": robustness_verdict(depths, limits),
        "coverage_all_levels_met": {
            level: table1_block["coverage_verdict"][level]["met"]
            and all(r["coverage_verdict"][level]["met"] for c in depths.values() for r in c.values())
            for level in COVERAGE_TARGETS
        },
        "classical_formal_errors": classical,
        "real": real_check({"production": estimator}, real_dir) if real_dir and Path(real_dir).is_dir() else None,
        "figure": str(figure),
    }
    report["targets"] = _targets(report, reports / "table1.json", limits)
    return report


def _targets(report: dict, table1_path: Path, limits: dict) -> dict:
    """Each target of the production issue: value, threshold, met."""
    r2 = report["table1_test"]["r2"]
    targets = {}
    if table1_path.is_file():
        classical = json.loads(table1_path.read_text()).get("classical")
        if classical:
            targets["table1_h23_vs_classical"] = {
                p: {"production": r2["paper_h23"][p], "classical": round(classical[p], 5), "met": r2["paper_h23"][p] >= classical[p]}
                for p in PARAMETERS
            }
    targets["table1_full_range"] = {
        p: {"production": r2["full_h245"][p], "target": t, "met": r2["full_h245"][p] >= t} for p, t in FULL_RANGE_TARGET.items()
    }
    targets["noise_robustness"] = report["robustness"]
    targets["coverage"] = report["coverage_all_levels_met"]
    real = report.get("real")
    median = real["estimators"]["production"]["median_error_check_sample"]["mag"] if real else None
    if median is not None:  # GALFIT - estimate (legato.evaluation.real_check)
        targets["real_uds_median_delta_mag"] = {"value": median, "target": 0.15, "met": abs(median) <= 0.15}
    return targets
