"""The F160W point-spread function: building the versioned PSF image and loading it.

Convention (shared with the classical fitter): the PSF image is the
instrument PSF (optics, native 0.13" WFC3/IR detector pixel, charge diffusion
and jitter) SAMPLED at the centres of 0.06" output pixels, WITHOUT the 0.06"
output-pixel response (header ``PIXRESP = F``). Renderers add the output-pixel
response exactly once: GalSim when it draws with ``method='auto'``, Imfit by
integrating its model over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from legato.conventions import BAND, INSTRUMENT, PIXEL_SCALE_ARCSEC
from legato.errors import DataError

PSF_ID = "legato-model-wfc3ir-f160w-v1"
WAVELENGTH_NM = 1545.0
MIRROR_DIAMETER_M = 2.4
OBSCURATION = 0.33
NATIVE_PIXEL_ARCSEC = 0.13
DIFFUSION_SIGMA_ARCSEC = 0.04


def model_psf_profile():
    """Analytic model of the HST WFC3/IR F160W PSF as a GalSim profile.

    An obscured Airy pattern at 1545 nm for the 2.4 m HST mirror, convolved
    with the native 0.13" WFC3/IR pixel and a Gaussian (sigma 0.04") for charge
    diffusion, jitter and drizzling; its FWHM is about 0.18".

    Returns
    -------
    galsim.GSObject
        Unit-flux PSF profile, sizes in arcsec.
    """
    import galsim

    return galsim.Convolve(
        [
            galsim.Airy(lam=WAVELENGTH_NM, diam=MIRROR_DIAMETER_M, obscuration=OBSCURATION, scale_unit=galsim.arcsec),
            galsim.Box(NATIVE_PIXEL_ARCSEC, NATIVE_PIXEL_ARCSEC),
            galsim.Gaussian(sigma=DIFFUSION_SIGMA_ARCSEC),
        ]
    )


def write_psf_image(path: str | Path, size: int = 51, pixel_scale: float = PIXEL_SCALE_ARCSEC) -> Path:
    """Sample the model PSF on a pixel grid and write it as a FITS image.

    Parameters
    ----------
    path : str or Path
        Output FITS file.
    size : int
        Image side in pixels (odd, so the PSF centre is a pixel centre).
    pixel_scale : float
        Sampling in arcsec / pixel.

    Returns
    -------
    Path
        The written file.
    """
    if size < 5 or size % 2 == 0:
        raise DataError(f"PSF image size must be an odd number >= 5, got {size}")
    profile = model_psf_profile()
    image = profile.drawImage(nx=size, ny=size, scale=pixel_scale, method="no_pixel")
    array = image.array.astype(np.float64)
    array /= array.sum()
    header = fits.Header()
    header["PSFID"] = (PSF_ID, "PSF identifier")
    header["INSTRUME"] = (INSTRUMENT, "instrument")
    header["FILTER"] = (BAND, "band")
    header["PIXSCALE"] = (pixel_scale, "arcsec / pixel")
    header["PIXRESP"] = (False, "0.06in output-pixel response included?")
    header["FWHM"] = (round(float(image.calculateFWHM()), 4), "arcsec, measured on this image")
    header["NORMAL"] = ("SUM=1", "normalisation")
    header["COMMENT"] = (
        f"Model PSF: obscured Airy {WAVELENGTH_NM:g} nm D={MIRROR_DIAMETER_M:g} m eps={OBSCURATION:g} "
        f"x box {NATIVE_PIXEL_ARCSEC:g}in x Gaussian sigma {DIFFUSION_SIGMA_ARCSEC:g}in; made by legato make-psf"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(array.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


@dataclass(frozen=True)
class PSFImage:
    """A PSF image read from FITS, with its identifier and sampling."""

    array: np.ndarray
    psf_id: str
    pixel_scale: float

    def galsim_profile(self):
        """The PSF as a GalSim ``InterpolatedImage`` (unit flux, arcsec units)."""
        import galsim

        image = galsim.Image(np.ascontiguousarray(self.array, dtype=np.float64), scale=self.pixel_scale)
        return galsim.InterpolatedImage(image, normalization="flux", flux=1.0)


def read_psf_image(path: str | Path, expected_pixel_scale: float = PIXEL_SCALE_ARCSEC) -> PSFImage:
    """Read and check a PSF FITS image.

    Parameters
    ----------
    path : str or Path
        FITS file with the PSF in its primary HDU and ``PIXSCALE`` / ``PSFID`` keywords.
    expected_pixel_scale : float
        Pixel scale (arcsec / pixel) the PSF must be sampled at.

    Returns
    -------
    PSFImage
        The PSF normalised to unit sum.

    Raises
    ------
    DataError
        If the file is missing or corrupt, the image is not a finite 2-D array
        with positive sum, or its pixel scale differs from ``expected_pixel_scale``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"PSF image not found: {path}")
    try:
        with fits.open(path) as hdul:
            array = np.asarray(hdul[0].data, dtype=np.float64)
            header = hdul[0].header
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read PSF image {path}: {exc}") from None
    if array.ndim != 2 or not np.all(np.isfinite(array)) or array.sum() <= 0:
        raise DataError(f"PSF image {path} must be a finite 2-D image with positive sum")
    scale = float(header.get("PIXSCALE", expected_pixel_scale))
    if not np.isclose(scale, expected_pixel_scale, rtol=1e-6):
        raise DataError(f"PSF image {path} has PIXSCALE {scale}, expected {expected_pixel_scale} arcsec/pixel")
    return PSFImage(array=array / array.sum(), psf_id=str(header.get("PSFID", path.stem)), pixel_scale=scale)
