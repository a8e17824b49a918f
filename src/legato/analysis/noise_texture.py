"""The texture of sky noise: per-pixel sigma, neighbour-pixel correlation, artefacts.

Drizzled HST mosaics (CANDELS) have sky noise correlated over about two
pixels; a simulated domain that is to look like them must reproduce both the
per-pixel sigma and the correlation, and a stamp padded beyond its observed
area must be filled with noise of the same texture. The statistics here are
measured the same way on real GALFIT residuals, on the sky pixels of real
stamps and on simulated stamps, so they can be compared.

Noise is in the stamp's units (electrons/s); lags are in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from legato.stats import robust_sigma

HOLE_THRESHOLD_SIGMA = 4.0  # a "negative hole" pixel lies this many sigma below zero
HOLE_FRACTION_LIMIT = 0.005  # more such pixels than this fraction of the stamp: an artefact (Gaussian noise: ~3e-5)
CLIP_SIGMA = 3.0  # pixels beyond this many robust sigma (sources, cosmic rays) are left out of the correlation


@dataclass(frozen=True)
class NoiseStatistics:
    """Noise texture of one image.

    Attributes
    ----------
    sigma : float
        Robust per-pixel standard deviation (1.4826 MAD), image units.
    correlation : dict
        Lag (pixels) -> normalised autocorrelation, the mean of the x and y directions.
    n_pixels : int
        Pixels used.
    """

    sigma: float
    correlation: dict
    n_pixels: int


def noise_autocorrelation(image: np.ndarray, mask: np.ndarray | None = None, lags=(1, 2), clip_sigma: float = CLIP_SIGMA) -> dict:
    """Normalised autocorrelation of an image's noise at integer pixel lags.

    Pairs of pixels ``lag`` apart along x and along y are used when both are
    finite, unmasked and within ``clip_sigma`` robust sigma of the median (so a
    residual source or a cosmic ray does not dominate); the two directions are
    averaged.

    Parameters
    ----------
    image : numpy.ndarray
        2-D noise image (a GALFIT residual, or a stamp whose sources are masked), any units.
    mask : numpy.ndarray of bool, optional
        True for pixels to leave out.
    lags : iterable of int
        Lags in pixels.
    clip_sigma : float
        Clipping threshold in robust sigma.

    Returns
    -------
    dict
        ``{lag: correlation}``; NaN where fewer than 10 pairs remain.
    """
    image = np.asarray(image, dtype=np.float64)
    good = np.isfinite(image) if mask is None else np.isfinite(image) & ~np.asarray(mask, dtype=bool)
    if not good.any():
        return {int(lag): float("nan") for lag in lags}
    centre = float(np.median(image[good]))
    sigma = robust_sigma(image[good])
    values = np.where(good, image - centre, 0.0)
    good &= np.abs(values) < clip_sigma * sigma if sigma > 0 else good
    out = {}
    for lag in lags:
        lag = int(lag)
        estimates = []
        for a, b, ga, gb in (
            (values[:, :-lag], values[:, lag:], good[:, :-lag], good[:, lag:]),
            (values[:-lag, :], values[lag:, :], good[:-lag, :], good[lag:, :]),
        ):
            pair = ga & gb
            if pair.sum() >= 10:
                x, y = a[pair], b[pair]
                estimates.append(float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))))
        out[lag] = float(np.mean(estimates)) if estimates else float("nan")
    return out


def noise_statistics(image: np.ndarray, mask: np.ndarray | None = None, lags=(1, 2)) -> NoiseStatistics:
    """Per-pixel sigma and autocorrelation of an image's noise (see :func:`noise_autocorrelation`)."""
    image = np.asarray(image, dtype=np.float64)
    good = np.isfinite(image) if mask is None else np.isfinite(image) & ~np.asarray(mask, dtype=bool)
    sigma = robust_sigma(image[good]) if good.any() else float("nan")
    return NoiseStatistics(float(sigma), noise_autocorrelation(image, mask, lags), int(good.sum()))


@lru_cache(maxsize=64)
def kernel_lag_correlation(kernel_sigma_pix: float, lag: int = 1) -> float:
    """Autocorrelation at ``lag`` pixels of white noise smoothed as :func:`legato.simulation.noise.correlated_noise` does."""
    from scipy.ndimage import gaussian_filter1d

    if kernel_sigma_pix <= 0:
        return 0.0
    delta = np.zeros(int(8 * kernel_sigma_pix) + 2 * lag + 3)
    delta[len(delta) // 2] = 1.0
    kernel = gaussian_filter1d(delta, kernel_sigma_pix, mode="constant")
    return float(np.sum(kernel[:-lag] * kernel[lag:]) / np.sum(kernel * kernel))


def kernel_sigma_for_correlation(correlation: float, lag: int = 1) -> float:
    """The Gaussian kernel sigma (pixels) whose smoothed white noise has ``correlation`` at ``lag`` pixels.

    Parameters
    ----------
    correlation : float
        Target autocorrelation in [0, 0.95].
    lag : int
        Lag in pixels.

    Returns
    -------
    float
        Kernel sigma in pixels (0 for uncorrelated noise).

    Raises
    ------
    ValueError
        If ``correlation`` is outside [0, 0.95].
    """
    if not np.isfinite(correlation) or not 0.0 <= correlation <= 0.95:
        raise ValueError(f"a noise correlation must be in [0, 0.95], got {correlation}")
    if correlation < 0.01:
        return 0.0
    low, high = 0.05, 10.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if kernel_lag_correlation(round(middle, 6), lag) < correlation:
            low = middle
        else:
            high = middle
    return round(0.5 * (low + high), 4)


MAX_KERNEL_CORRELATION = 0.9  # measured lag-1 correlations are clipped into [0, this] before they become a kernel


def kernel_sigma_for_measured_correlation(correlation: float) -> float:
    """:func:`kernel_sigma_for_correlation` of a *measured* lag-1 correlation: NaN taken as 0 (white), clipped into [0, 0.9]."""
    value = float(np.clip(np.nan_to_num(float(correlation), nan=0.0), 0.0, MAX_KERNEL_CORRELATION))
    return kernel_sigma_for_correlation(value, lag=1)


def negative_hole_fraction(image: np.ndarray, sigma: float, threshold_sigma: float = HOLE_THRESHOLD_SIGMA) -> float:
    """Fraction of pixels below ``-threshold_sigma * sigma`` (negative holes no real F160W image has)."""
    image = np.asarray(image)
    if not sigma > 0:
        return float("nan")
    return float(np.mean(image < -threshold_sigma * sigma))


def has_negative_holes(image: np.ndarray, sigma: float, limit: float = HOLE_FRACTION_LIMIT) -> bool:
    """True when more than ``limit`` of the pixels are negative holes (below -4 ``sigma``)."""
    return negative_hole_fraction(image, sigma) > limit
