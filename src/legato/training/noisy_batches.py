"""Training and evaluation batches drawn from noiseless models at survey depths.

A batch is a pure function of ``(seed, step)``: the same step always gives the
same galaxies, symmetries and noise, so a resumed training sees exactly the
batches an uninterrupted one would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legato.errors import ConfigError
from legato.simulation.noise import NoiseModel, survey_noise_realisation
from legato.symmetry import dihedral


@dataclass(frozen=True)
class DepthRange:
    """The survey depths a network is trained over.

    Attributes
    ----------
    sky_scale : tuple of float
        Range of the sky sigma relative to the calibrated one, drawn log-uniformly.
    correlation_pix : tuple of float
        Gaussian correlation kernels of the sky noise (pixels; 0 = white), drawn with equal probability.
    """

    sky_scale: tuple = (0.2, 2.5)
    correlation_pix: tuple = (0.0, 0.4, 0.7, 1.0)

    def __post_init__(self):
        low, high = self.sky_scale
        if not 0 < low <= high:
            raise ConfigError(f"sky_scale must be an increasing pair of positive factors, got {self.sky_scale}")
        if not self.correlation_pix or min(self.correlation_pix) < 0:
            raise ConfigError(f"correlation_pix must be non-negative kernel sigmas, got {self.correlation_pix}")

    def draw(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` depth factors (log-uniform) and correlation kernels."""
        low, high = np.log(self.sky_scale[0]), np.log(self.sky_scale[1])
        scale = np.exp(rng.uniform(low, high, count))
        correlation = np.asarray(self.correlation_pix, dtype=float)[rng.integers(0, len(self.correlation_pix), count)]
        return scale, correlation


def noisy_batch(
    models: np.ndarray,
    targets: np.ndarray,
    noise: NoiseModel,
    depths: DepthRange,
    batch_size: int,
    seed: int,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Training batch ``step``: random galaxies, a random symmetry and a random depth each.

    Parameters
    ----------
    models : numpy.ndarray
        ``(N, H, W)`` noiseless training models, electrons/s.
    targets : numpy.ndarray
        ``(N, T)`` standardised targets.
    noise : NoiseModel
        The calibrated noise model.
    depths : DepthRange
        Depths drawn for the batch.
    batch_size : int
        Stamps per batch.
    seed, step : int
        The batch is a pure function of these.

    Returns
    -------
    tuple of numpy.ndarray
        Stamps ``(batch_size, H, W)`` float32 and their targets.
    """
    rng = np.random.default_rng([seed, step])
    rows = rng.integers(0, len(models), batch_size)
    stamps = dihedral(models[rows], rng.integers(0, 8, batch_size))
    scale, correlation = depths.draw(batch_size, rng)
    return survey_noise_realisation(stamps, noise, scale, correlation, rng), targets[rows]


def noisy_copies(models: np.ndarray, noise: NoiseModel, sky_scale, correlation_pix, seed: int) -> np.ndarray:
    """One fixed noisy realisation of every model (evaluation and calibration sets).

    ``sky_scale`` and ``correlation_pix`` are scalars or one value per model.
    """
    rng = np.random.default_rng(seed)
    count = len(models)
    scale = np.broadcast_to(np.asarray(sky_scale, dtype=float), (count,))
    correlation = np.broadcast_to(np.asarray(correlation_pix, dtype=float), (count,))
    out = np.empty(models.shape, dtype=np.float32)
    for start in range(0, count, 2048):
        block = slice(start, start + 2048)
        out[block] = survey_noise_realisation(models[block], noise, scale[block], correlation[block], rng)
    return out
