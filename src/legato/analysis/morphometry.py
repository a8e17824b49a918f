"""Model-independent measurements of a galaxy image: total flux, moments, radii.

Coordinates are numpy (row = y, column = x) with the stamp centre at pixel
``(H // 2, W // 2)``; angles follow GALFIT (degrees counter-clockwise from +y).
"""

from __future__ import annotations

import numpy as np

from legato.conventions import galsim_beta_to_galfit_pa_deg
from legato.stats import robust_sigma


def pixel_grid(shape: tuple[int, int], center: tuple[float, float] | None = None):
    """Pixel-centre coordinates ``(x, y)`` relative to ``center`` (default: the stamp centre)."""
    ny, nx = shape
    cy, cx = center if center is not None else (ny // 2, nx // 2)
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    return x - cx, y - cy


def second_moment_axis_ratio(image: np.ndarray) -> tuple[float, float]:
    """Axis ratio and position angle from the adaptive (elliptical-Gaussian-weighted) second moments.

    Uses GalSim's HSM adaptive moments (Bernstein & Jarvis 2002): the weight
    is iterated to match the light's own ellipse, so for an elliptical profile
    the moment ratio is the isophotal axis ratio whatever the radial profile,
    and far wings (or low-level artefacts) do not bias it as unweighted
    moments are.

    Parameters
    ----------
    image : numpy.ndarray
        2-D background-free image.

    Returns
    -------
    q : float
        Axis ratio b/a of the moment ellipse.
    pa_deg : float
        Major-axis angle, degrees counter-clockwise from +y, in [-90, 90).

    Raises
    ------
    galsim.hsm.GalSimHSMError
        If the moments do not converge (e.g. a blank image).
    """
    import galsim

    moments = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(image, dtype=np.float64)))
    shape = moments.observed_shape
    return float(shape.q), float(galsim_beta_to_galfit_pa_deg(shape.beta.deg))


def elliptical_half_light_radius(image: np.ndarray, q: float, pa_deg: float, total_flux: float | None = None) -> float:
    """Semi-major half-light radius (pixels) from the curve of growth in elliptical apertures.

    Parameters
    ----------
    image : numpy.ndarray
        2-D background-free image centred on the stamp centre.
    q : float
        Axis ratio of the apertures.
    pa_deg : float
        Position angle of the apertures, degrees CCW from +y.
    total_flux : float, optional
        Total flux; default: the image sum.

    Returns
    -------
    float
        Semi-major axis (pixels) of the aperture enclosing half of ``total_flux``.
    """
    image = np.asarray(image, dtype=float)
    x, y = pixel_grid(image.shape)
    theta = np.radians(pa_deg)
    # coordinates along the major axis (direction of angle pa from +y) and the minor axis
    major = -x * np.sin(theta) + y * np.cos(theta)
    minor = x * np.cos(theta) + y * np.sin(theta)
    radius = np.sqrt(major**2 + (minor / q) ** 2).ravel()
    order = np.argsort(radius)
    growth = np.cumsum(image.ravel()[order])
    half = 0.5 * (image.sum() if total_flux is None else total_flux)
    return float(np.interp(half, growth, radius[order]))


def border_pixels(image: np.ndarray, width: int = 4) -> np.ndarray:
    """The pixels within ``width`` of the stamp border (the sky region of a centred stamp)."""
    image = np.asarray(image, dtype=float)
    border = np.ones(image.shape, dtype=bool)
    border[width:-width, width:-width] = False
    return image[border]


def border_sigma(image: np.ndarray, width: int = 4) -> float:
    """Robust sky noise (electrons/s) from the pixels within ``width`` of the stamp border (NMAD)."""
    return robust_sigma(border_pixels(image, width))


def border_background(image: np.ndarray, width: int = 4) -> float:
    """Sky level (electrons/s) from the pixels within ``width`` of the stamp border (median of finite pixels)."""
    pixels = border_pixels(image, width)
    pixels = pixels[np.isfinite(pixels)]
    return float(np.median(pixels)) if pixels.size else 0.0
