"""Galleries of the evaluation: each method's worst and typical galaxies as stamp | model | residual."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legato.columns import COLUMN, PARAMETERS
from legato.stats import errors, robust_sigma


def error_score(truth, estimates) -> np.ndarray:
    """Sum over parameters of (error / the method's robust scatter)²: how far off a galaxy is (NaN: no estimate)."""
    score = np.zeros(len(truth))
    for p in PARAMETERS:
        err = errors(p, truth[COLUMN[p]], estimates[COLUMN[p]])
        scale = robust_sigma(err)
        score += (err / scale) ** 2 if scale > 0 else 0.0
    return score


def worst_and_typical(score: np.ndarray, count: int) -> tuple[list[int], list[int]]:
    """Indices of the ``count`` largest scores and of the ``count`` closest to the median score."""
    finite = np.flatnonzero(np.isfinite(score))
    worst = finite[np.argsort(-score[finite], kind="stable")[:count]]
    typical = finite[np.argsort(np.abs(score[finite] - np.median(score[finite])), kind="stable")[:count]]
    return [int(k) for k in worst], [int(k) for k in typical if k not in worst]


def add_goodness_of_fit(
    stamps, methods: dict, psf_path: str | Path, exposure_time: float | None, chi2_threshold: float, workers: int = 2
) -> dict:
    """Add ``chi2_nu``, ``residual_flux_fraction``, ``residual_asymmetry`` to every method's estimates (in place).

    Returns
    -------
    dict
        Per method: median reduced chi², its 99th percentile and the fraction above
        ``chi2_threshold`` (``BAD_FIT``), over the rows with an estimate.
    """
    from legato.inference.measurements import AugmentedEstimator, ResidualAugmentation
    from legato.modelling.renderer import renderer_from_psf_file
    from legato.modelling.statistics import STATISTICS

    renderer = renderer_from_psf_file(psf_path, size=stamps.shape[-1])
    summary = {}
    with AugmentedEstimator(None, [ResidualAugmentation(renderer, chi2_threshold, exposure_time)], workers) as augmented:
        for method, estimates in methods.items():
            measured = augmented.augment(estimates, stamps)
            for name in STATISTICS:
                estimates[name] = measured[name]
            chi2 = np.asarray(measured["chi2_nu"], dtype=float)
            chi2 = chi2[np.isfinite(chi2)]
            summary[method] = {
                "median_chi2_nu": round(float(np.median(chi2)), 4) if chi2.size else None,
                "p99_chi2_nu": round(float(np.percentile(chi2, 99)), 4) if chi2.size else None,
                "bad_fit_fraction": round(float(np.mean(chi2 > chi2_threshold)), 4) if chi2.size else None,
                "chi2_threshold": chi2_threshold,
            }
    return summary


def method_galleries(
    stamps, truth, methods: dict, psf_path: str | Path, exposure_time: float | None, folder: str | Path, count: int = 4
) -> dict[str, Path]:
    """One PNG per method (``gallery_<method>.png``): its ``count`` worst and ``count`` typical galaxies.

    Each panel's title gives the estimate, the reduced chi² of its model and the truth.
    """
    from legato.modelling.gallery import gallery_figure
    from legato.modelling.inspect import inspect_row
    from legato.modelling.renderer import renderer_from_psf_file

    renderer = renderer_from_psf_file(psf_path, size=stamps.shape[-1])
    folder = Path(folder)
    figures = {}
    for method, estimates in methods.items():
        worst, typical = worst_and_typical(error_score(truth, estimates), count)
        inspections = []
        for kind, rows in (("worst", worst), ("typical", typical)):
            for k in rows:
                t = truth[k]
                label = f'{kind}; true H {t["mag"]:.2f} re {t["re_arcsec"]:.2f}" n {t["n"]:.2f} e {t["ellipticity"]:.2f}'
                inspections.append(inspect_row(estimates[k], stamps[k], renderer, exposure_time, label))
        figures[method] = gallery_figure(inspections, folder / f"gallery_{method}.png", title=f"{method}: worst and typical test galaxies")
    return figures
