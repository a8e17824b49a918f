"""Rendering PSF-convolved single-Sérsic stamps with GalSim."""

from __future__ import annotations

import numpy as np

from legato.conventions import circular_half_light_radius, galfit_pa_to_galsim_beta_deg, mag_to_flux

# Fraction of flux GalSim may fold into the FFT box (default 5e-3). At 2e-2 the
# flux error is below 1e-3 and high-n, large galaxies draw 2-3x faster.
FOLDING_THRESHOLD = 2e-2


def sersic_profile(
    mag: float, re_arcsec: float, n: float, q: float, pa_deg: float, zeropoint: float, folding_threshold: float = FOLDING_THRESHOLD
):
    """A sheared single-Sérsic GalSim profile in the project's conventions.

    Parameters
    ----------
    mag : float
        Total AB magnitude.
    re_arcsec : float
        Semi-major-axis half-light radius, arcsec.
    n : float
        Sérsic index (GalSim range 0.3-6.2).
    q : float
        Axis ratio b/a.
    pa_deg : float
        Position angle, degrees counter-clockwise from the stamp's +y axis (GALFIT).
    zeropoint : float
        AB zeropoint (magnitude of 1 electron/s).
    folding_threshold : float
        Fraction of flux GalSim may fold into its FFT box (an accuracy setting,
        not a convention: smaller is slower and smoother in the parameters).

    Returns
    -------
    galsim.GSObject
        Profile with total flux in electrons/s and sizes in arcsec.
    """
    import galsim

    flux = float(mag_to_flux(mag, zeropoint))
    gsparams = galsim.GSParams(folding_threshold=folding_threshold)
    radius = float(circular_half_light_radius(re_arcsec, q))
    profile = galsim.Sersic(n=float(n), half_light_radius=radius, flux=flux, gsparams=gsparams)
    if q < 1.0:
        profile = profile.shear(q=float(q), beta=float(galfit_pa_to_galsim_beta_deg(pa_deg)) * galsim.degrees)
    return profile


def render_sersic_stamp(
    mag: float,
    re_arcsec: float,
    n: float,
    q: float,
    pa_deg: float,
    x_offset_pix: float,
    y_offset_pix: float,
    *,
    psf,
    size: int,
    pixel_scale: float,
    zeropoint: float,
    folding_threshold: float = FOLDING_THRESHOLD,
) -> np.ndarray:
    """Noiseless stamp of a PSF-convolved Sérsic galaxy, integrated over pixels.

    The stamp centre is the centre of pixel ``(size // 2, size // 2)`` (0-based,
    numpy order), the galaxy is offset from it by ``(x_offset_pix, y_offset_pix)``.

    Parameters
    ----------
    mag, re_arcsec, n, q, pa_deg : float
        Sérsic parameters (see :func:`sersic_profile`).
    x_offset_pix, y_offset_pix : float
        Offset of the galaxy centre from the stamp centre, pixels.
    psf : galsim.GSObject or None
        PSF profile without the output-pixel response, or None for no PSF.
    size : int
        Stamp side, pixels.
    pixel_scale : float
        Arcsec / pixel.
    zeropoint : float
        AB zeropoint.
    folding_threshold : float
        GalSim FFT accuracy (see :func:`sersic_profile`).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 image in electrons/s.
    """
    import galsim

    galaxy = sersic_profile(mag, re_arcsec, n, q, pa_deg, zeropoint, folding_threshold)
    if psf is not None:
        galaxy = galsim.Convolve(galaxy, psf, gsparams=galaxy.gsparams)
    # GalSim centres an even-sized image between pixels; shift so the nominal
    # centre is pixel (size // 2) as in GALFIT/numpy conventions.
    half_pixel = 0.0 if size % 2 else 0.5
    offset = galsim.PositionD(x_offset_pix + half_pixel, y_offset_pix + half_pixel)
    image = galaxy.drawImage(nx=size, ny=size, scale=pixel_scale, offset=offset, method="auto")
    return image.array.astype(np.float64)
