"""Goodness of fit of one estimate: reduced chi², residual flux fraction and residual asymmetry.

All three are measured in the *fit region*: the pixels where the model of the estimate
exceeds the sky sigma, grown by ``GROW_PIX`` pixels (at least the central 5x5 pixels),
so a small galaxy's residual is not diluted by thousands of sky pixels.

- ``chi2_nu``: ``sum (r / sigma)**2 / (N - 7)`` with ``r = stamp - model`` and
  ``sigma**2 = sky_sigma**2 + model / exposure_time`` (7: the Sérsic parameters,
  centre included); about 1 when the model describes the stamp down to the noise.
- ``residual_flux_fraction``: ``(sum |r| - sqrt(2/pi) sum sigma) / sum model``
  (Hoyos et al. 2011): the fraction of the galaxy's light the model misses, with
  the mean absolute value of pure noise removed (about 0 for a perfect model).
- ``residual_asymmetry``: ``(sum |r - r_180| - (2/sqrt(pi)) sum sigma) / (2 sum model)``,
  ``r_180`` the residual rotated by 180 degrees about the stamp centre: asymmetric
  structure left over (a neighbour, a clump, a wrong centre), noise removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation

GROW_PIX = 2
N_PARAMETERS = 7
STATISTICS = ("chi2_nu", "residual_flux_fraction", "residual_asymmetry")


@dataclass(frozen=True)
class FitStatistics:
    """Goodness of fit of one estimate (see the module docstring)."""

    chi2_nu: float
    residual_flux_fraction: float
    residual_asymmetry: float
    n_pixels: int

    def as_dict(self) -> dict[str, float]:
        """The three statistics by column name."""
        return {name: getattr(self, name) for name in STATISTICS}


NAN_STATISTICS = FitStatistics(float("nan"), float("nan"), float("nan"), 0)


def fit_region(model: np.ndarray, sky_sigma: float) -> np.ndarray:
    """Pixels where ``model > sky_sigma``, grown by ``GROW_PIX``, plus the central 5x5 pixels."""
    region = binary_dilation(model > sky_sigma, iterations=GROW_PIX)
    centre = model.shape[0] // 2
    region[centre - 2 : centre + 3, centre - 2 : centre + 3] = True
    return region


def rotate_180(image: np.ndarray) -> np.ndarray:
    """``image`` rotated by 180 degrees about the centre of pixel ``(size // 2, size // 2)``."""
    return np.roll(image[::-1, ::-1], shift=(1 - image.shape[0] % 2, 1 - image.shape[1] % 2), axis=(0, 1))


def fit_statistics(stamp: np.ndarray, model: np.ndarray, sky_sigma: float, exposure_time: float | None = None) -> FitStatistics:
    """Reduced chi², residual flux fraction and residual asymmetry of ``model`` against ``stamp``.

    Parameters
    ----------
    stamp, model : numpy.ndarray
        The stamp and the noiseless model of its estimate, electrons/s, same shape.
    sky_sigma : float
        Sky noise per pixel, electrons/s.
    exposure_time : float, optional
        Effective exposure time (s) for the source's Poisson noise (sky only if None).

    Returns
    -------
    FitStatistics
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    model = np.asarray(model, dtype=np.float64)
    variance = sky_sigma**2 + (0.0 if exposure_time is None else np.clip(model, 0.0, None) / exposure_time)
    sigma = np.sqrt(np.broadcast_to(variance, stamp.shape))
    region = fit_region(model, sky_sigma)
    residual = stamp - model
    flux = float(np.sum(model[region]))
    n_pixels = int(region.sum())
    chi2 = float(np.sum((residual[region] / sigma[region]) ** 2) / max(n_pixels - N_PARAMETERS, 1))
    noise_sum = float(np.sum(sigma[region]))
    rff = (float(np.sum(np.abs(residual[region]))) - np.sqrt(2.0 / np.pi) * noise_sum) / flux if flux > 0 else float("nan")
    asymmetric = np.abs(residual - rotate_180(residual))[region]
    asymmetry = (float(np.sum(asymmetric)) - 2.0 / np.sqrt(np.pi) * noise_sum) / (2.0 * flux) if flux > 0 else float("nan")
    return FitStatistics(chi2, float(rff), float(asymmetry), n_pixels)
