"""Automatic initial guesses for a Sérsic fit from image moments (no human tuning)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gamma, gammaincinv

from legato.analysis.morphometry import elliptical_half_light_radius, pixel_grid, second_moment_axis_ratio

DEFAULT_N = 1.5


def sersic_b(n: float) -> float:
    """The constant b_n of a Sérsic profile (half the light inside r_e)."""
    return float(gammaincinv(2.0 * n, 0.5))


def sersic_surface_brightness_at_re(flux: float, re_pix: float, n: float, q: float) -> float:
    """Surface brightness at r_e (flux / pixel) of a Sérsic profile of total ``flux``.

    ``flux = 2 pi n e^b b^(-2n) Gamma(2n) q re^2 I_e`` (Graham & Driver 2005).
    """
    b = sersic_b(n)
    return float(flux / (2.0 * np.pi * n * np.exp(b) * b ** (-2.0 * n) * gamma(2.0 * n) * q * re_pix**2))


@dataclass(frozen=True)
class InitialGuess:
    """Starting point of a fit (pixels, 0-based numpy centre; GALFIT angles)."""

    x: float
    y: float
    flux: float
    re_pix: float
    n: float
    q: float
    pa_deg: float


def initial_guess(image: np.ndarray, noise_sigma: float) -> InitialGuess:
    """Moments-based start: centroid, aperture flux, adaptive-moment shape, curve-of-growth radius.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted stamp (electrons/s), galaxy near the centre.
    noise_sigma : float
        Sky noise per pixel (electrons/s), used to keep only significant pixels.

    Returns
    -------
    InitialGuess
    """
    ny, nx = image.shape
    x, y = pixel_grid(image.shape, center=(0.0, 0.0))
    r = np.hypot(x - nx // 2, y - ny // 2)
    significant = (image > 2.0 * noise_sigma) & (r < 0.4 * min(nx, ny))
    weights = np.where(significant, image, 0.0)
    if weights.sum() <= 0:
        weights = np.where(r < 3, np.clip(image, 0, None), 0.0) + 1e-12
    xc = float((weights * x).sum() / weights.sum())
    yc = float((weights * y).sum() / weights.sum())
    if np.hypot(xc - nx // 2, yc - ny // 2) > 3:
        xc, yc = float(nx // 2), float(ny // 2)
    aperture = r < 0.45 * min(nx, ny)
    flux = float(max(np.where(aperture, image, 0.0).sum(), 10 * noise_sigma))
    try:
        q, pa = second_moment_axis_ratio(np.where(aperture, image, 0.0))
    except Exception:  # noqa: BLE001 - HSM fails on blank or very faint stamps: start round
        q, pa = 0.8, 0.0
    q = float(np.clip(q, 0.1, 1.0))
    re_pix = elliptical_half_light_radius(np.where(aperture, image, 0.0), q, pa, total_flux=flux)
    re_pix = float(np.clip(re_pix, 1.0, 0.4 * min(nx, ny)))
    return InitialGuess(x=xc, y=yc, flux=flux, re_pix=re_pix, n=DEFAULT_N, q=q, pa_deg=pa)
