"""Calibration and coverage of per-galaxy uncertainties.

The production network predicts a Gaussian standard deviation for each
standardised target; on held-out stamps the normalised errors
``z = (truth - mean) / sigma`` give, per target, the factors that turn sigma
into a calibrated 68.27% and 95% interval half-width. Coverage is then the
fraction of galaxies whose truth lies inside the interval.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

LEVELS = {"68": 0.6827, "95": 0.95}


def calibration_scales(truth: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> dict[str, list[float]]:
    """Per-target factors ``s`` so that ``|truth - mean| <= s * sigma`` holds for 68.27% / 95% of galaxies.

    Parameters
    ----------
    truth, mean, sigma : numpy.ndarray
        ``(N, T)`` values in the network's target space.

    Returns
    -------
    dict
        ``{"68": [s per target], "95": [s per target]}``.
    """
    z = np.abs((truth - mean) / sigma)
    return {key: [float(np.quantile(z[:, t], level)) for t in range(z.shape[1])] for key, level in LEVELS.items()}


def binned_calibration_scales(truth, mean, sigma, predicted_mag, edges, min_count: int = 100) -> dict:
    """:func:`calibration_scales` per bin of *predicted* magnitude (a bin with fewer than ``min_count`` galaxies takes the global factors).

    Returns
    -------
    dict
        ``{"mag_edges": [...], "68": [[s per target] per bin], "95": [...]}``; bins are
        ``(-inf, e1), [e1, e2), ..., [ek, inf)`` for ``edges = [e1, ..., ek]``.
    """
    overall = calibration_scales(truth, mean, sigma)
    index = np.searchsorted(np.asarray(edges), np.asarray(predicted_mag), side="right")
    result = {"mag_edges": [float(e) for e in edges], "68": [], "95": []}
    for b in range(len(edges) + 1):
        members = index == b
        scales = calibration_scales(truth[members], mean[members], sigma[members]) if members.sum() >= min_count else overall
        for key in LEVELS:
            result[key].append(scales[key])
    return result


def scale_for(calibration: dict, level: str, predicted_mag) -> np.ndarray:
    """``(N, T)`` calibration factors of ``level`` for galaxies of predicted magnitude ``predicted_mag``."""
    factors = np.asarray(calibration[level], dtype=float)
    if factors.ndim == 1:  # global factors only
        return np.broadcast_to(factors, (len(predicted_mag), len(factors)))
    index = np.searchsorted(np.asarray(calibration["mag_edges"]), np.asarray(predicted_mag), side="right")
    return factors[np.clip(index, 0, len(factors) - 1)]


def covered(truth: np.ndarray, mean: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Boolean array: truth inside ``mean +/- half_width`` (NaN rows count as not covered)."""
    with np.errstate(invalid="ignore"):
        return np.abs(np.asarray(truth) - np.asarray(mean)) <= np.asarray(half_width)


def reliability_curve(truth: np.ndarray, mean: np.ndarray, sigma68: np.ndarray, nominal=None) -> tuple[np.ndarray, np.ndarray]:
    """Observed against nominal coverage of Gaussian intervals ``mean +/- Phi^-1((1 + p) / 2) * sigma68``.

    Returns
    -------
    tuple of numpy.ndarray
        Nominal levels and the observed fraction at each.
    """
    nominal = np.linspace(0.05, 0.99, 24) if nominal is None else np.asarray(nominal)
    z = np.abs((np.asarray(truth) - np.asarray(mean)) / np.asarray(sigma68))
    return nominal, np.array([np.mean(z <= norm.ppf(0.5 + p / 2)) for p in nominal])
