"""Conventions shared by every module (DESIGN.md section 2).

Units at the boundaries
-----------------------
- pixel scale: arcsec / pixel
- fluxes and pixel values: electrons / s (``BUNIT = 'ELECTRONS/S'``)
- magnitudes: AB, with the CANDELS WFC3/IR F160W zeropoint
- ``re_arcsec``: half-light radius along the SEMI-MAJOR axis, in arcsec
- ``q``: axis ratio b/a in (0, 1]; ``ellipticity = 1 - q``
- ``pa_deg``: position angle in degrees, counter-clockwise from the +y axis
  of the stamp (GALFIT convention)
"""

from __future__ import annotations

import numpy as np

BAND = "F160W"
INSTRUMENT = "WFC3/IR"
PIXEL_SCALE_ARCSEC = 0.06
# AB zeropoints (magnitude of 1 electron/s) of the CANDELS mosaics, all drizzled to 0.06"/pixel:
# F160W and F125W as in the CANDELS UDS GALFIT blocks (MAGZPT), the others the CANDELS/3D-HST values
# (ACS/WFC F814W, 25.937, lies 0.009 from F160W: io.ingest.band_of_zeropoint still tells them apart)
ZEROPOINT_AB = {"F606W": 26.4902, "F814W": 25.9370, "F105W": 26.2687, "F125W": 26.2303, "F140W": 26.4524, "F160W": 25.9463}
BUNIT = "ELECTRONS/S"
SERSIC_N_MIN = 0.2
SERSIC_N_MAX = 8.0
Q_MIN = 0.05
DEFAULT_STAMP_SIZE = 64


def zeropoint(band: str) -> float:
    """AB zeropoint of a supported band.

    Parameters
    ----------
    band : str
        Filter name, e.g. ``"F160W"``.

    Returns
    -------
    float
        AB magnitude of a source giving 1 electron/s.

    Raises
    ------
    ConfigError
        If the band is not one the project knows.
    """
    from legato.errors import ConfigError

    try:
        return ZEROPOINT_AB[band]
    except KeyError:
        known = ", ".join(sorted(ZEROPOINT_AB))
        raise ConfigError(f"unknown band {band!r}; supported bands: {known}") from None


def mag_to_flux(mag, zp: float = ZEROPOINT_AB[BAND]):
    """Total flux in electrons/s of an AB magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zp))


def flux_to_mag(flux, zp: float = ZEROPOINT_AB[BAND]):
    """AB magnitude of a total flux in electrons/s (NaN for flux <= 0)."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zp - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def circular_half_light_radius(re_arcsec, q):
    """GalSim's circular half-light radius of a semi-major ``re`` and axis ratio ``q``.

    GalSim's shear preserves area, so an ellipse of semi-major half-light
    radius ``re`` and axis ratio ``q`` has circular radius ``re * sqrt(q)``.
    """
    return np.asarray(re_arcsec) * np.sqrt(np.asarray(q))


def galfit_pa_to_galsim_beta_deg(pa_deg):
    """Convert a GALFIT position angle (from +y, CCW) to GalSim's shear angle (from +x, CCW)."""
    return (np.asarray(pa_deg) + 90.0) % 180.0


def galsim_beta_to_galfit_pa_deg(beta_deg):
    """Convert GalSim's shear angle (from +x, CCW) to a GALFIT position angle in [-90, 90)."""
    return (np.asarray(beta_deg) % 180.0) - 90.0


def ellipticity(q):
    """Ellipticity ``1 - q`` of an axis ratio."""
    return 1.0 - np.asarray(q)
