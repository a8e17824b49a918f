"""How close each method gets to the physical limit: RMSE against the Cramér-Rao bound.

For a parameter p, a set of galaxies with true values ``t_i`` and bounds ``s_i``
(standard deviations, :mod:`legato.modelling.bounds`), an efficient unbiased estimator
has mean squared error ``mean(s_i**2)``. So

- the *efficiency ratio* of a method is ``RMSE / sqrt(mean(s_i**2))`` (1 = at the limit;
  an estimator that uses prior knowledge can go below 1, being biased);
- the *limit R²* is ``1 - sum(s_i**2) / sum((t_i - mean t)**2)``, the R² an efficient
  unbiased estimator would reach on the same galaxies (Table 1's limit column).

Only galaxies with a valid bound (``crb_flags == 0``) enter; method rows without an
estimate are left out of that method's numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from legato.columns import COLUMN, PARAMETERS
from legato.figures import save_figure
from legato.modelling.bounds import BOUND_COLUMNS
from legato.stats import estimated_parameters, r2_score


def limit_r2(true, bounds) -> float:
    """R² of an efficient unbiased estimator: ``1 - sum(bound**2) / sum((true - mean)**2)``."""
    true, bounds = np.asarray(true, dtype=float), np.asarray(bounds, dtype=float)
    ok = np.isfinite(true) & np.isfinite(bounds)
    total = np.sum((true[ok] - true[ok].mean()) ** 2)
    return float(1.0 - np.sum(bounds[ok] ** 2) / total) if total > 0 else float("nan")


def aligned_bounds(bound_table, ids):
    """The bound table reordered to ``ids``; galaxies it lacks, or flagged ones, get NaN bounds."""
    order = {int(i): k for k, i in enumerate(bound_table["id"])}
    rows = np.array([order.get(int(i), -1) for i in ids])
    valid = (rows >= 0) & (np.asarray(bound_table["crb_flags"])[np.clip(rows, 0, None)] == 0)
    return {
        column: np.where(valid, np.asarray(bound_table[column], dtype=float)[np.clip(rows, 0, None)], np.nan)
        for column in BOUND_COLUMNS.values()
    }


def _bin_row(true, estimate, bounds) -> dict:
    ok = np.isfinite(true) & np.isfinite(estimate) & np.isfinite(bounds)
    if not ok.any():
        return {"count": 0, "rmse": None, "bias": None, "crb_rms": None, "ratio": None}
    rmse = float(np.sqrt(np.mean((estimate[ok] - true[ok]) ** 2)))
    crb_rms = float(np.sqrt(np.mean(bounds[ok] ** 2)))
    return {
        "count": int(ok.sum()),
        "rmse": rmse,
        "bias": float(np.mean(estimate[ok] - true[ok])),
        "crb_rms": crb_rms,
        "ratio": rmse / crb_rms if crb_rms > 0 else None,
    }


def efficiency_report(truth, methods: dict, bounds: dict, subsets: dict[str, float], mag_bins) -> dict:
    """RMSE / CRB per method, parameter and magnitude bin, and the limit R² per subset.

    Parameters
    ----------
    truth : table-like
        True ``mag, re_arcsec, n, ellipticity`` (bins use the true magnitude).
    methods : dict of str to table-like
        Estimates by method, rows aligned with ``truth``.
    bounds : dict
        :func:`aligned_bounds` output (standard deviations, NaN where invalid).
    subsets : dict of str to float
        Subset name to faintest true magnitude.
    mag_bins : sequence of float
        Magnitude bin edges.

    Returns
    -------
    dict
        ``binned[method][parameter]``: rows of ``mag_lo, mag_hi, count, rmse, bias,
        crb_rms, ratio`` (units of the parameter: mag, arcsec, none); ``subsets[subset]``:
        ``n_bounded``, ``limit_r2`` per parameter, and per method its ``r2`` and
        ``ratio`` on the same galaxies; ``closest``: per parameter and bin, the method
        with the smallest ratio.
    """
    mag = np.asarray(truth["mag"], dtype=float)
    report: dict = {"mag_bins": [float(b) for b in mag_bins], "binned": {}, "subsets": {}, "closest": {}}
    for method, estimates in methods.items():
        report["binned"][method] = {}
        for p in estimated_parameters(estimates):
            true = np.asarray(truth[COLUMN[p]], dtype=float)
            estimate = np.asarray(estimates[COLUMN[p]], dtype=float)
            rows = []
            for lo, hi in zip(mag_bins[:-1], mag_bins[1:]):
                inside = (mag >= lo) & (mag < hi)
                rows.append(
                    {"mag_lo": float(lo), "mag_hi": float(hi), **_bin_row(true[inside], estimate[inside], bounds[BOUND_COLUMNS[p]][inside])}
                )
            report["binned"][method][p] = rows
    for subset, mag_max in subsets.items():
        inside = mag <= mag_max
        block: dict = {"limit_r2": {}, "methods": {m: {"r2": {}, "ratio": {}} for m in methods}}
        for p in PARAMETERS:
            bound = bounds[BOUND_COLUMNS[p]]
            bounded = inside & np.isfinite(bound)
            true = np.asarray(truth[COLUMN[p]], dtype=float)
            block["limit_r2"][p] = limit_r2(true[bounded], bound[bounded])
            for method, estimates in methods.items():
                if COLUMN[p] not in getattr(estimates, "colnames", estimates):
                    continue
                estimate = np.asarray(estimates[COLUMN[p]], dtype=float)
                block["methods"][method]["r2"][p] = r2_score(true[bounded], estimate[bounded])
                block["methods"][method]["ratio"][p] = _bin_row(true[bounded], estimate[bounded], bound[bounded])["ratio"]
        block["n_bounded"] = int(np.sum(inside & np.isfinite(bounds[BOUND_COLUMNS["mag"]])))
        report["subsets"][subset] = block
    for p in PARAMETERS:
        closest = []
        for k in range(len(mag_bins) - 1):
            ratios = {m: report["binned"][m][p][k]["ratio"] for m in methods if p in report["binned"][m]}
            ratios = {m: r for m, r in ratios.items() if r is not None}
            closest.append(min(ratios, key=ratios.get) if ratios else None)
        report["closest"][p] = closest
    return report


def write_efficiency_plots(report: dict, folder: str | Path) -> list[Path]:
    """CSV tables for ``dvc plots`` (one per parameter): bin centre, the bound, each method's RMSE."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bins = report["mag_bins"]
    centres = [0.5 * (lo + hi) for lo, hi in zip(bins[:-1], bins[1:])]
    methods = list(report["binned"])
    written = []
    for p in PARAMETERS:
        path = folder / f"crb_{p}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["mag", "crb", *methods])
            for k, centre in enumerate(centres):
                crb = next((report["binned"][m][p][k]["crb_rms"] for m in methods if p in report["binned"][m]), None)
                writer.writerow([centre, crb, *[report["binned"][m].get(p, [{}] * len(centres))[k].get("rmse") for m in methods]])
        written.append(path)
    return written


def efficiency_figure(report: dict, path: str | Path) -> Path:
    """RMSE of every method and the Cramér-Rao bound against magnitude, one panel per parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {"mag": "mag", "re": "arcsec", "n": "", "ellipticity": ""}
    bins = report["mag_bins"]
    centres = np.array([0.5 * (lo + hi) for lo, hi in zip(bins[:-1], bins[1:])])
    figure, axes = plt.subplots(1, len(PARAMETERS), figsize=(4.0 * len(PARAMETERS), 3.6))
    for axis, p in zip(axes, PARAMETERS):
        drawn_limit = False
        for method, per_parameter in report["binned"].items():
            if p not in per_parameter:
                continue
            rows = per_parameter[p]
            rmse = np.array([np.nan if r["rmse"] is None else r["rmse"] for r in rows])
            axis.plot(centres, rmse, marker="o", label=method)
            if not drawn_limit:
                crb = np.array([np.nan if r["crb_rms"] is None else r["crb_rms"] for r in rows])
                axis.plot(centres, crb, color="black", linestyle="--", label="Cramér-Rao bound")
                drawn_limit = True
        axis.set_yscale("log")
        axis.set_xlabel("true H (F160W) mag")
        axis.set_title(f"{p} RMSE" + (f" ({units[p]})" if units[p] else ""))
    axes[0].legend(fontsize=8)
    return save_figure(figure, path)
