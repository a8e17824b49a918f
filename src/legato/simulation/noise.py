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


def correlation_norm(correlation_pix: float) -> float:
    """Standard deviation of unit white noise after a Gaussian filter of ``correlation_pix`` pixels."""
    from scipy.ndimage import gaussian_filter

    if correlation_pix <= 0:
        return 1.0
    # a unit white field smoothed by kernel k has variance sum(k**2): the filter's own kernel, from a delta
    delta = np.zeros((int(8 * correlation_pix) + 3,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    return float(np.sqrt(np.sum(gaussian_filter(delta, correlation_pix, mode="constant") ** 2)))


def correlated_noise(shape: tuple, sigma, correlation_pix: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sky noise of per-pixel standard deviation ``sigma`` with a Gaussian correlation kernel.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``, or ``(N, H, W)`` for a stack (each image filtered on its own).
    sigma : float or numpy.ndarray
        Per-pixel standard deviation (electrons/s); for a stack, one value per image or a scalar.
    correlation_pix : float
        Kernel sigma in pixels (0: white noise).
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        float64 noise of ``shape``.
    """
    from scipy.ndimage import gaussian_filter

    white = rng.normal(size=shape)
    scale = np.asarray(sigma, dtype=float)
    if len(shape) == 3 and scale.ndim == 1:
        scale = scale[:, None, None]
    if correlation_pix <= 0:
        return scale * white
    kernel = (0.0, correlation_pix, correlation_pix) if len(shape) == 3 else correlation_pix
    return scale * gaussian_filter(white, kernel, mode="wrap") / correlation_norm(correlation_pix)


def survey_noise_realisation(
    models: np.ndarray,
    base: NoiseModel,
    sky_scale: np.ndarray,
    correlation_pix: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noisy stamps of noiseless models at survey depths other than the calibrated one.

    A field ``sky_scale`` times noisier than the calibrated one has sky sigma
    ``base.sky_sigma * sky_scale`` and, at the same sky brightness, an exposure
    ``base.exposure_time / sky_scale**2``; the source Poisson noise follows it
    (Gaussian approximation: every source pixel holds many electrons). The sky
    noise is white or correlated by a Gaussian kernel of ``correlation_pix``
    pixels (drizzled mosaics), rescaled to the nominal per-pixel sigma.

    Parameters
    ----------
    models : numpy.ndarray
        ``(N, H, W)`` noiseless models, electrons/s.
    base : NoiseModel
        The calibrated noise model (sky sigma, exposure time).
    sky_scale : numpy.ndarray
        ``(N,)`` depth factors (sky sigma / calibrated sky sigma).
    correlation_pix : numpy.ndarray
        ``(N,)`` correlation kernel sigmas in pixels (0: white).
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32 stamps, electrons/s.
    """
    models = np.asarray(models, dtype=np.float32)
    sky_scale = np.broadcast_to(np.asarray(sky_scale, dtype=np.float64), (len(models),))
    correlation_pix = np.broadcast_to(np.asarray(correlation_pix, dtype=np.float64), (len(models),))
    sigma = base.sky_sigma * sky_scale
    exposure = base.exposure_time / sky_scale**2
    source_sigma = np.sqrt(np.clip(models, 0.0, None) / exposure[:, None, None])
    noisy = models + (source_sigma * rng.standard_normal(models.shape)).astype(np.float32)
    for value in np.unique(correlation_pix):
        members = np.flatnonzero(correlation_pix == value)
        noisy[members] += correlated_noise((len(members),) + models.shape[1:], sigma[members], float(value), rng).astype(np.float32)
    return noisy
