"""Per-stamp summary statistics: the table the stamp-integrity and domain-shift suites validate.

Every statistic is model-independent and cheap (vectorised over the stamps):
backgrounds and noise from the stamp border, light-weighted moments inside a
central aperture, a circular curve of growth.
"""

from __future__ import annotations

import numpy as np

BORDER_PIX = 4
NMAD = 1.4826

# column -> (unit, what it guards against)
COLUMNS = {
    "height": ("pix", "stamp shape"),
    "width": ("pix", "stamp shape"),
    "finite_fraction": ("", "NaN / inf pixels"),
    "background": ("electron / s", "background not subtracted, sky offsets"),
    "noise_sigma": ("electron / s", "noise level (exposure depth, wrong units)"),
    "flux": ("electron / s", "empty stamps, zeropoint / unit errors"),
    "mag_aperture": ("mag", "zeropoint / unit errors"),
    "centroid_offset": ("pix", "off-centre sources"),
    "border_flux_fraction": ("", "truncated galaxies, neighbours, background offsets"),
    "peak_snr": ("", "depth, PSF width"),
    "half_light_radius": ("pix", "pixel scale, PSF width"),
    "concentration": ("", "PSF width, profile shape (r80 / r20)"),
    "ellipticity_moments": ("", "shear / orientation artefacts"),
}


def _border_mask(shape: tuple[int, int], width: int = BORDER_PIX) -> np.ndarray:
    mask = np.ones(shape, dtype=bool)
    mask[width:-width, width:-width] = False
    return mask


def stamp_summary(stamps: np.ndarray, zeropoint: float) -> dict[str, np.ndarray]:
    """Summary statistics of each stamp of a ``(N, H, W)`` cube (electrons/s).

    Parameters
    ----------
    stamps : numpy.ndarray
        Stamps, any float dtype; NaN/inf pixels are counted and ignored.
    zeropoint : float
        AB zeropoint, for ``mag_aperture``.

    Returns
    -------
    dict of str to numpy.ndarray
        One array of length N per column of :data:`COLUMNS`.
    """
    cube = np.asarray(stamps, dtype=np.float64)
    if cube.ndim != 3:
        raise ValueError(f"expected a (N, H, W) cube, got shape {cube.shape}")
    n, ny, nx = cube.shape
    finite = np.isfinite(cube)
    clean = np.where(finite, cube, 0.0)
    border = _border_mask((ny, nx))
    border_pixels = np.where(finite[:, border], cube[:, border], np.nan)
    background = np.nanmedian(border_pixels, axis=1)
    noise = NMAD * np.nanmedian(np.abs(border_pixels - background[:, None]), axis=1)
    image = clean - np.nan_to_num(background)[:, None, None]

    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    cy, cx = ny // 2, nx // 2
    radius = np.hypot(x - cx, y - cy)
    aperture = radius < 0.45 * min(nx, ny)
    flux = np.sum(image * aperture, axis=(1, 2))
    total = np.sum(image, axis=(1, 2))
    weights = np.clip(image, 0.0, None) * (radius < 0.25 * min(nx, ny))
    weight_sum = np.maximum(weights.sum(axis=(1, 2)), 1e-30)
    mx = np.sum(weights * x, axis=(1, 2)) / weight_sum
    my = np.sum(weights * y, axis=(1, 2)) / weight_sum
    dx, dy = x[None] - mx[:, None, None], y[None] - my[:, None, None]
    qxx = np.sum(weights * dx**2, axis=(1, 2)) / weight_sum
    qyy = np.sum(weights * dy**2, axis=(1, 2)) / weight_sum
    qxy = np.sum(weights * dx * dy, axis=(1, 2)) / weight_sum
    ellipticity = np.hypot(qxx - qyy, 2 * qxy) / np.maximum(qxx + qyy, 1e-30)

    order = np.argsort(radius.ravel())
    sorted_radius = radius.ravel()[order]
    growth = np.cumsum((image * aperture).reshape(n, -1)[:, order], axis=1)

    def radius_at(fraction: float) -> np.ndarray:
        target = fraction * flux
        index = np.argmax(growth >= target[:, None], axis=1)
        return np.where(flux > 0, sorted_radius[index], np.nan)

    r20, r50, r80 = radius_at(0.2), radius_at(0.5), radius_at(0.8)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zeropoint - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
        border_fraction = np.sum(image * border, axis=(1, 2)) / np.where(total != 0, np.abs(total), np.nan)
        peak_snr = image.max(axis=(1, 2)) / noise
        concentration = r80 / np.maximum(r20, 0.5)
    return {
        "height": np.full(n, ny),
        "width": np.full(n, nx),
        "finite_fraction": finite.mean(axis=(1, 2)),
        "background": background,
        "noise_sigma": noise,
        "flux": flux,
        "mag_aperture": mag,
        "centroid_offset": np.hypot(mx - cx, my - cy),
        "border_flux_fraction": border_fraction,
        "peak_snr": peak_snr,
        "half_light_radius": r50,
        "concentration": concentration,
        "ellipticity_moments": ellipticity,
    }
