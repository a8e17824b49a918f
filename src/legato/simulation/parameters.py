"""Drawing Sérsic parameters from the real joint distribution of a GALFIT catalogue.

The sampler is a smoothed bootstrap: it picks catalogue rows (good fits in the
requested magnitude and radius range) at random, then jitters them with a small
Gaussian kernel in (mag, ln re, ln n, logit q) so the simulated sets do not
repeat catalogue tuples exactly while keeping the joint distribution and its
correlations (brighter galaxies are larger, discs flatter, ...).

Sérsic indices are snapped to a logarithmic grid (``n_grid_dex``): GalSim
rebuilds its Hankel tables for every new index (~0.1 s), so a grid lets a
worker reuse them. The label is the snapped value, so labels stay exact.
GalSim renders 0.3 <= n <= 6.2 only; indices outside (2.4 % of the van der Wel
good fits) are clipped to those limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.table import Table

from legato.conventions import Q_MIN, ellipticity
from legato.errors import ConfigError

GALSIM_N_MIN = 0.3
GALSIM_N_MAX = 6.2


@dataclass(frozen=True)
class ParameterSpace:
    """The range of simulated parameters.

    Attributes
    ----------
    mag_min, mag_max : float
        AB magnitude range (inclusive).
    re_max_arcsec : float
        Largest semi-major half-light radius, arcsec.
    re_min_arcsec : float
        Smallest semi-major half-light radius, arcsec.
    bandwidth : float
        Kernel width of the smoothed bootstrap, in units of each transformed
        parameter's standard deviation (0 = plain bootstrap).
    n_grid_dex : float
        Step of the log10 grid Sérsic indices are snapped to (0 = no snapping).
    max_offset_pix : float
        Largest sub-pixel offset of the galaxy centre from the stamp centre, pixels.
    """

    mag_min: float = 16.0
    mag_max: float = 24.5
    re_max_arcsec: float = 1.0
    re_min_arcsec: float = 0.01
    bandwidth: float = 0.1
    n_grid_dex: float = 0.005
    max_offset_pix: float = 0.5

    def __post_init__(self):
        if not self.mag_min < self.mag_max:
            raise ConfigError(f"mag_min ({self.mag_min}) must be below mag_max ({self.mag_max})")
        if not 0 < self.re_min_arcsec < self.re_max_arcsec:
            raise ConfigError(f"need 0 < re_min_arcsec < re_max_arcsec, got {self.re_min_arcsec} and {self.re_max_arcsec}")
        if self.bandwidth < 0 or self.n_grid_dex < 0 or self.max_offset_pix < 0:
            raise ConfigError("bandwidth, n_grid_dex and max_offset_pix must be >= 0")


def _to_latent(mag, re, n, q):
    q = np.clip(q, Q_MIN, 0.999)
    return np.column_stack([mag, np.log(re), np.log(n), np.log(q / (1 - q))])


def _from_latent(z):
    return z[:, 0], np.exp(z[:, 1]), np.exp(z[:, 2]), 1.0 / (1.0 + np.exp(-z[:, 3]))


def snap_sersic_index(n, grid_dex: float):
    """Snap Sérsic indices to a log10 grid and clip them to GalSim's range.

    Parameters
    ----------
    n : array_like
        Sérsic indices.
    grid_dex : float
        Grid step in dex; 0 only clips.

    Returns
    -------
    numpy.ndarray
        Snapped indices within [0.3, 6.2].
    """
    n = np.asarray(n, dtype=float)
    if grid_dex > 0:
        n = 10.0 ** (np.round(np.log10(n) / grid_dex) * grid_dex)
    return np.clip(n, GALSIM_N_MIN, GALSIM_N_MAX)


def draw_parameters(catalog: Table, size: int, space: ParameterSpace, rng: np.random.Generator) -> Table:
    """Draw ``size`` galaxies from the catalogue's joint (mag, re, n, q) distribution.

    Parameters
    ----------
    catalog : astropy.table.Table
        Good-fit rows already inside ``space`` (see ``select_good_fits``),
        with columns NUMBER, mag, re, n, q, sn.
    size : int
        Number of galaxies to draw.
    space : ParameterSpace
        Ranges and sampler settings.
    rng : numpy.random.Generator
        Random generator (the only source of randomness).

    Returns
    -------
    astropy.table.Table
        Columns ``mag`` [mag], ``re_arcsec`` [arcsec], ``n``, ``q``,
        ``ellipticity``, ``pa_deg`` [deg] (GALFIT convention),
        ``x_offset_pix`` / ``y_offset_pix`` [pix], ``source_number`` (the
        catalogue row drawn) and ``catalog_sn`` (its S/N).
    """
    if size < 0:
        raise ConfigError(f"number of galaxies must be >= 0, got {size}")
    latent = _to_latent(
        np.asarray(catalog["mag"], float),
        np.asarray(catalog["re"], float),
        np.asarray(catalog["n"], float),
        np.asarray(catalog["q"], float),
    )
    scale = space.bandwidth * latent.std(axis=0)
    rows = np.empty(size, dtype=np.int64)
    values = np.empty((size, 4))
    missing = np.arange(size)
    while missing.size:
        picked = rng.integers(0, len(catalog), missing.size)
        z = latent[picked] + rng.normal(size=(missing.size, 4)) * scale
        mag, re, _, _ = _from_latent(z)
        ok = (mag >= space.mag_min) & (mag <= space.mag_max) & (re >= space.re_min_arcsec) & (re <= space.re_max_arcsec)
        rows[missing[ok]] = picked[ok]
        values[missing[ok]] = z[ok]
        missing = missing[~ok]
    mag, re, n, q = _from_latent(values)
    q = np.clip(q, Q_MIN, 1.0)
    n = snap_sersic_index(n, space.n_grid_dex)
    table = Table()
    table["mag"] = mag * u.mag
    table["re_arcsec"] = re * u.arcsec
    table["n"] = n
    table["q"] = q
    table["ellipticity"] = ellipticity(q)
    table["pa_deg"] = rng.uniform(-90.0, 90.0, size) * u.deg
    table["x_offset_pix"] = rng.uniform(-space.max_offset_pix, space.max_offset_pix, size) * u.pix
    table["y_offset_pix"] = rng.uniform(-space.max_offset_pix, space.max_offset_pix, size) * u.pix
    table["source_number"] = np.asarray(catalog["NUMBER"])[rows]
    table["catalog_sn"] = np.asarray(catalog["sn"], float)[rows]
    return table
