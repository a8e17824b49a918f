"""Noise model of a background-subtracted CANDELS-like stamp, and its S/N.

A stamp is in electrons/s. The sky level ``B = sky_sigma**2 * exposure_time``
(electrons/s/pixel) and the source are Poisson-sampled in electrons over the
effective exposure time, divided by it, and the sky level is subtracted, so
the per-pixel variance is ``sky_sigma**2 + model / exposure_time``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legato.errors import ConfigError


@dataclass(frozen=True)
class NoiseModel:
    """Sky plus source Poisson noise.

    Attributes
    ----------
    sky_sigma : float
        Standard deviation of the sky noise, electrons/s/pixel.
    exposure_time : float
        Effective exposure time (gain to electrons), seconds.
    """

    sky_sigma: float
    exposure_time: float

    def __post_init__(self):
        if not (self.sky_sigma > 0 and np.isfinite(self.sky_sigma)):
            raise ConfigError(f"sky_sigma must be a positive number of electrons/s/pixel, got {self.sky_sigma}")
        if not (self.exposure_time > 0 and np.isfinite(self.exposure_time)):
            raise ConfigError(f"exposure_time must be a positive number of seconds, got {self.exposure_time}")

    @property
    def sky_level(self) -> float:
        """Sky level subtracted from the stamp, electrons/s/pixel."""
        return self.sky_sigma**2 * self.exposure_time

    def variance(self, model: np.ndarray) -> np.ndarray:
        """Per-pixel variance (electrons/s)^2 of a noiseless model in electrons/s."""
        return self.sky_sigma**2 + np.clip(model, 0.0, None) / self.exposure_time

    def add_noise(self, model: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A noisy, sky-subtracted realisation of a noiseless model.

        Parameters
        ----------
        model : numpy.ndarray
            Noiseless image, electrons/s.
        rng : numpy.random.Generator
            Random generator.

        Returns
        -------
        numpy.ndarray
            float32 image, electrons/s.
        """
        electrons = (np.clip(model, 0.0, None) + self.sky_level) * self.exposure_time
        noisy = rng.poisson(electrons) / self.exposure_time - self.sky_level
        return noisy.astype(np.float32)


def segmentation_snr(model: np.ndarray, noise: NoiseModel, threshold_sigma: float = 1.0) -> float:
    """Expected S/N of the flux inside the segmentation region of a source.

    The region is the set of pixels where the noiseless model exceeds
    ``threshold_sigma`` times the sky noise, as a detection segmentation map
    would be; the S/N is the summed model over the square root of the summed
    variance there (the definition of the van der Wel catalogue's ``sn``:
    "integrated over the F160W segmentation region").

    Parameters
    ----------
    model : numpy.ndarray
        Noiseless image (2-D) or stack of images (3-D), electrons/s.
    noise : NoiseModel
        The noise model.
    threshold_sigma : float
        Segmentation threshold in units of the sky sigma.

    Returns
    -------
    float or numpy.ndarray
        S/N per image (0 where no pixel passes the threshold).
    """
    model = np.asarray(model, dtype=float)
    region = model > threshold_sigma * noise.sky_sigma
    signal = np.where(region, model, 0.0).sum(axis=(-2, -1))
    variance = np.where(region, noise.variance(model), 0.0).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 0, signal / np.sqrt(np.where(variance > 0, variance, 1.0)), 0.0)
