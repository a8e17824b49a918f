"""Point-spread functions of the CANDELS bands: building the versioned PSF images and loading them.

Convention (shared with the classical fitter): a PSF image is the instrument
PSF (optics, the native detector pixel, charge diffusion and jitter) SAMPLED
at the centres of 0.06" output pixels, WITHOUT the 0.06" output-pixel
response (header ``PIXRESP = F``). Renderers add the output-pixel response
exactly once: GalSim when it draws with ``method='auto'``, Imfit by
integrating its model over pixels.

The model of each band (:data:`BANDS`) is an obscured Airy pattern at the
band's pivot wavelength for the 2.4 m HST mirror, convolved with the native
detector pixel (WFC3/IR 0.13", ACS/WFC 0.05") and a Gaussian for charge
diffusion, jitter and drizzling. A measured PSF image of any band (TinyTim, a
stack of stars) can replace the model: every reader takes a FITS file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from legato.conventions import BAND, PIXEL_SCALE_ARCSEC
from legato.errors import ConfigError, DataError

MIRROR_DIAMETER_M = 2.4
OBSCURATION = 0.33


@dataclass(frozen=True)
class BandOptics:
    """What the analytic PSF model of one band is made of.

    Attributes
    ----------
    band, instrument : str
        Filter and camera.
    wavelength_nm : float
        Wavelength of the Airy pattern (the band's pivot), nm.
    native_pixel_arcsec : float
        Detector pixel the PSF is integrated over, arcsec.
    diffusion_sigma_arcsec : float
        Gaussian sigma of charge diffusion, jitter and drizzling, arcsec.
    """

    band: str
    instrument: str
    wavelength_nm: float
    native_pixel_arcsec: float
    diffusion_sigma_arcsec: float

    @property
    def psf_id(self) -> str:
        """Identifier written in the image header (and in every stamp set drawn with it)."""
        return f"legato-model-{self.instrument.replace('/', '').lower()}-{self.band.lower()}-v1"

    @property
    def file_name(self) -> str:
        """File name of the versioned image under ``data/psf/``."""
        return f"{self.instrument.replace('/', '').lower()}_{self.band.lower()}_psf.fits"


BANDS = {
    optics.band: optics
    for optics in (
        BandOptics("F606W", "ACS/WFC", 592.1, 0.05, 0.03),
        BandOptics("F814W", "ACS/WFC", 805.7, 0.05, 0.03),
        BandOptics("F105W", "WFC3/IR", 1055.2, 0.13, 0.04),
        BandOptics("F125W", "WFC3/IR", 1248.6, 0.13, 0.04),
        BandOptics("F140W", "WFC3/IR", 1392.3, 0.13, 0.04),
        BandOptics("F160W", "WFC3/IR", 1545.0, 0.13, 0.04),
    )
}
PSF_ID = BANDS[BAND].psf_id  # the F160W model: legato-model-wfc3ir-f160w-v1


def band_optics(band: str) -> BandOptics:
    """The optics of a supported band.

    Raises
    ------
    ConfigError
        If the band has no PSF model.
    """
    try:
        return BANDS[band]
    except KeyError:
        raise ConfigError(f"no PSF model for band {band!r}; bands: {', '.join(BANDS)}") from None


#: the project's versioned PSF images (an editable install's ``data/psf``)
PROJECT_PSF_DIR = Path(__file__).resolve().parents[3] / "data" / "psf"


def band_psf_path(band: str) -> Path:
    """The versioned model PSF image of a band: ``data/psf/`` of the working directory, else of the project.

    Raises
    ------
    ConfigError
        On an unknown band.
    """
    name = band_optics(band).file_name
    local = Path("data/psf") / name
    return local if local.exists() or not (PROJECT_PSF_DIR / name).exists() else PROJECT_PSF_DIR / name


def model_psf_profile(band: str = BAND):
    """Analytic model of a band's HST PSF as a GalSim profile (F160W: FWHM about 0.18").

    Parameters
    ----------
    band : str
        One of :data:`BANDS`.

    Returns
    -------
    galsim.GSObject
        Unit-flux PSF profile, sizes in arcsec.
    """
    import galsim

    optics = band_optics(band)
    return galsim.Convolve(
        [
            galsim.Airy(lam=optics.wavelength_nm, diam=MIRROR_DIAMETER_M, obscuration=OBSCURATION, scale_unit=galsim.arcsec),
            galsim.Box(optics.native_pixel_arcsec, optics.native_pixel_arcsec),
            galsim.Gaussian(sigma=optics.diffusion_sigma_arcsec),
        ]
    )


def write_psf_image(path: str | Path, size: int = 51, pixel_scale: float = PIXEL_SCALE_ARCSEC, band: str = BAND) -> Path:
    """Sample a band's model PSF on a pixel grid and write it as a FITS image.

    Parameters
    ----------
    path : str or Path
        Output FITS file.
    size : int
        Image side in pixels (odd, so the PSF centre is a pixel centre).
    pixel_scale : float
        Sampling in arcsec / pixel.
    band : str
        One of :data:`BANDS`.

    Returns
    -------
    Path
        The written file.
    """
    if size < 5 or size % 2 == 0:
        raise DataError(f"PSF image size must be an odd number >= 5, got {size}")
    optics = band_optics(band)
    profile = model_psf_profile(band)
    image = profile.drawImage(nx=size, ny=size, scale=pixel_scale, method="no_pixel")
    array = image.array.astype(np.float64)
    array /= array.sum()
    header = fits.Header()
    header["PSFID"] = (optics.psf_id, "PSF identifier")
    header["INSTRUME"] = (optics.instrument, "instrument")
    header["FILTER"] = (band, "band")
    header["PIXSCALE"] = (pixel_scale, "arcsec / pixel")
    header["PIXRESP"] = (False, "0.06in output-pixel response included?")
    header["FWHM"] = (round(float(image.calculateFWHM()), 4), "arcsec, measured on this image")
    header["NORMAL"] = ("SUM=1", "normalisation")
    header["COMMENT"] = (
        f"Model PSF: obscured Airy {optics.wavelength_nm:g} nm D={MIRROR_DIAMETER_M:g} m eps={OBSCURATION:g} "
        f"x box {optics.native_pixel_arcsec:g}in x Gaussian sigma {optics.diffusion_sigma_arcsec:g}in; made by legato make-psf"
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


def psf_summary(psf: PSFImage) -> tuple[float, float]:
    """The two numbers the PSF-conditioned estimator reads of a PSF: its FWHM and half-light radius, arcsec.

    Both are measured on the image's interpolated profile (no output-pixel
    response) redrawn at 0.005"/pixel, the same way for the model PSFs and for a
    user's PSF image, so they vary smoothly with the PSF's size.
    """
    fine = 0.005
    side = int(np.ceil(psf.array.shape[0] * psf.pixel_scale / fine)) | 1
    image = psf.galsim_profile().drawImage(nx=side, ny=side, scale=fine, method="no_pixel")
    return float(image.calculateFWHM()), float(image.calculateHLR())
