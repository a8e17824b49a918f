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

from legato.columns import INTERVAL_LEVELS


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
    return {key: [float(np.quantile(z[:, t], level)) for t in range(z.shape[1])] for key, level in INTERVAL_LEVELS.items()}


def binned_calibration_scales(truth, mean, sigma, predicted_mag, edges, noise_ratio=None, noise_edges=(), min_count: int = 100) -> dict:
    """:func:`calibration_scales` per bin of *predicted* magnitude and of measured noise (a bin with fewer than ``min_count``
    galaxies takes the factors of its magnitude bin, or the global ones).

    Parameters
    ----------
    truth, mean, sigma : numpy.ndarray
        ``(N, T)`` values in the network's target space.
    predicted_mag : numpy.ndarray
        ``(N,)`` predicted magnitudes.
    edges : sequence of float
        Inner magnitude edges: bins ``(-inf, e1), [e1, e2), ..., [ek, inf)``.
    noise_ratio : numpy.ndarray, optional
        ``(N,)`` measured sky sigma over the calibrated one.
    noise_edges : sequence of float
        Inner edges of the noise-ratio bins (none: one noise bin).

    Returns
    -------
    dict
        ``{"mag_edges", "noise_edges", "68": [noise bin][mag bin][target], "95": ...}``.
    """
    overall = calibration_scales(truth, mean, sigma)
    mag_index = np.searchsorted(np.asarray(edges), np.asarray(predicted_mag), side="right")
    noise_index = (
        np.zeros(len(mag_index), dtype=int)
        if noise_ratio is None
        else np.searchsorted(np.asarray(noise_edges), np.asarray(noise_ratio), side="right")
    )
    result = {"mag_edges": [float(e) for e in edges], "noise_edges": [float(e) for e in noise_edges], "68": [], "95": []}
    for level in INTERVAL_LEVELS:
        result[level] = [[None] * (len(edges) + 1) for _ in range(len(noise_edges) + 1)]
    for m in range(len(edges) + 1):
        in_mag = mag_index == m
        mag_scales = calibration_scales(truth[in_mag], mean[in_mag], sigma[in_mag]) if in_mag.sum() >= min_count else overall
        for k in range(len(noise_edges) + 1):
            members = in_mag & (noise_index == k)
            scales = calibration_scales(truth[members], mean[members], sigma[members]) if members.sum() >= min_count else mag_scales
            for level in INTERVAL_LEVELS:
                result[level][k][m] = scales[level]
    return result


def split_calibration(truth, mean, sigma, predicted_mag, edges, noise_ratio, noise_edges, blended) -> dict:
    """:func:`binned_calibration_scales` of the isolated stamps, with those of the blended ones under ``"blended"``.

    Blended stamps (a neighbour's light in the aperture, :func:`legato.io.stamp_checks.blend_measurements`)
    have errors the isolated ones do not: calibrated together, the intervals would be too wide on the
    isolated stamps and too narrow on the blended ones.
    """
    blended = np.asarray(blended, dtype=bool)
    parts = {}
    for name, rows in (("isolated", ~blended), ("blended", blended)):
        subset = (truth[rows], mean[rows], sigma[rows], predicted_mag[rows])
        parts[name] = binned_calibration_scales(*subset, edges, noise_ratio[rows], noise_edges)
    return {**parts["isolated"], "blended": parts["blended"], "blended_fraction": float(blended.mean())}


def scale_for(calibration: dict, level: str, predicted_mag, noise_ratio=None, blended=None) -> np.ndarray:
    """``(N, T)`` calibration factors of ``level`` for galaxies of predicted magnitude ``predicted_mag`` and measured noise ratio.

    A calibration made by :func:`split_calibration` gives the stamps flagged ``blended`` (boolean ``(N,)``) the
    factors of the blended stamps.
    """
    if blended is not None and "blended" in calibration:
        blended = np.asarray(blended, dtype=bool)
        isolated = {key: value for key, value in calibration.items() if key != "blended"}
        factors = scale_for(isolated, level, predicted_mag, noise_ratio)
        return np.where(blended[:, None], scale_for(calibration["blended"], level, predicted_mag, noise_ratio), factors)
    factors = np.asarray(calibration[level], dtype=float)
    if factors.ndim == 1:  # global factors only
        return np.broadcast_to(factors, (len(predicted_mag), len(factors)))
    if factors.ndim == 2:  # magnitude bins only
        factors = factors[None]
    mag_index = np.clip(
        np.searchsorted(np.asarray(calibration["mag_edges"]), np.asarray(predicted_mag), side="right"), 0, factors.shape[1] - 1
    )
    noise_edges = np.asarray(calibration.get("noise_edges") or [])
    if noise_ratio is None or factors.shape[0] == 1:
        noise_index = np.zeros(len(mag_index), dtype=int)
    else:
        noise_index = np.clip(np.searchsorted(noise_edges, np.asarray(noise_ratio), side="right"), 0, factors.shape[0] - 1)
    return factors[noise_index, mag_index]


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
