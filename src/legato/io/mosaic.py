"""Stamps cut from a mosaic image at catalogue positions.

A mosaic is a 2-D FITS image in electrons/s with a celestial WCS. Sources are
given either on the sky (RA/Dec, converted with the WCS) or in pixels (x/y).
Each stamp is centred like the training stamps: the source position is rounded
to the nearest pixel, which becomes pixel ``(size // 2, size // 2)`` (0-based) of
the stamp, so the source lies within half a pixel of the stamp centre.

Edge policy
-----------
- stamp fully inside the image: returned as is;
- partial overlap: the missing pixels are filled with ``fill_value`` (0, the
  background of a background-subtracted image) and the row is flagged
  :attr:`~legato.flags.StampFlag.NEAR_EDGE`;
- no overlap (or a position the WCS cannot place): an all-``fill_value`` stamp
  flagged ``OFF_IMAGE | FAILED_VALIDATION``;
- NaN/inf pixels inside the cut: flagged ``BAD_PIXELS | FAILED_VALIDATION``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D, NoOverlapError
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from legato.conventions import DEFAULT_STAMP_SIZE
from legato.errors import ConfigError, DataError
from legato.flags import FLAG_DTYPE, StampFlag


def read_mosaic(path: str | Path, hdu: int | str | None = None, memmap: bool = True):
    """Read a mosaic image and its WCS.

    Parameters
    ----------
    path : str or Path
        FITS file.
    hdu : int or str, optional
        HDU holding the image. Default: the first 2-D image HDU with a
        celestial WCS, else the first 2-D image HDU.
    memmap : bool
        Memory-map the image (large mosaics are read lazily).

    Returns
    -------
    image : numpy.ndarray
        2-D image (electrons/s).
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the image, None when the header has none.
    header : astropy.io.fits.Header
        The image's header.

    Raises
    ------
    DataError
        If the file cannot be read or holds no 2-D image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            warnings.simplefilter("ignore", FITSFixedWarning)
            hdul = fits.open(path, memmap=memmap)
            candidates = [hdul[hdu]] if hdu is not None else [h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2]
            if not candidates or candidates[0].data is None or candidates[0].data.ndim != 2:
                raise DataError(f"{path} holds no 2-D image" + (f" in HDU {hdu!r}" if hdu is not None else ""))
            chosen = candidates[0]
            wcs = None
            for candidate in candidates:
                candidate_wcs = image_wcs(candidate.header)
                if candidate_wcs.has_celestial:
                    chosen, wcs = candidate, candidate_wcs.celestial
                    break
            return chosen.data, wcs, chosen.header.copy()
    except FileNotFoundError:
        raise DataError(f"mosaic not found: {path}") from None
    except (OSError, KeyError, IndexError, ValueError, TypeError, AstropyUserWarning) as exc:
        raise DataError(f"cannot read mosaic {path}: {exc}") from None


def image_wcs(header: fits.Header) -> WCS:
    """The WCS of an image header, ignoring stray SIP keywords.

    Drizzled HST mosaics often keep the SIP distortion keywords of their input
    exposures while their ``CTYPE`` has no ``-SIP`` suffix: the image is already
    distortion-corrected, so those keywords are dropped (as the FITS standard
    reads them) instead of being applied.
    """
    header = header.copy()
    if not any(str(header.get(f"CTYPE{i}", "")).endswith("-SIP") for i in (1, 2)):
        for key in list(header.keys()):
            if re.fullmatch(r"(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)", key):
                del header[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def catalog_positions(
    catalog,
    wcs: WCS | None = None,
    ra: str = "ra",
    dec: str = "dec",
    x: str = "x",
    y: str = "y",
    pixel_origin: int = 1,
) -> np.ndarray:
    """Zero-based pixel positions ``(N, 2)`` (x, y) of catalogue sources.

    Uses the RA/Dec columns (degrees, with ``wcs``) when the catalogue has them
    and a WCS is given, else the x/y columns.

    Parameters
    ----------
    catalog : astropy.table.Table or mapping of columns
        The source catalogue.
    wcs : astropy.wcs.WCS, optional
        The mosaic's WCS (needed for RA/Dec).
    ra, dec : str
        Sky-coordinate column names, degrees (ICRS, or the WCS's frame).
    x, y : str
        Pixel-coordinate column names.
    pixel_origin : int
        Index of the first pixel in the x/y columns: 1 (FITS and SExtractor
        ``X_IMAGE``, the default) or 0 (numpy).

    Raises
    ------
    ConfigError
        If neither RA/Dec (with a WCS) nor x/y columns are present.
    """
    names = list(getattr(catalog, "colnames", None) or catalog.keys())
    lower = {name.lower(): name for name in names}
    ra_col, dec_col = lower.get(ra.lower()), lower.get(dec.lower())
    x_col, y_col = lower.get(x.lower()), lower.get(y.lower())
    if ra_col and dec_col and wcs is not None:
        ra_deg = _degrees(catalog[ra_col])
        dec_deg = _degrees(catalog[dec_col])
        px, py = wcs.all_world2pix(ra_deg, dec_deg, 0, quiet=True) if _has_distortion(wcs) else wcs.wcs_world2pix(ra_deg, dec_deg, 0)
        return np.column_stack([px, py]).astype(np.float64)
    if x_col and y_col:
        return np.column_stack([np.asarray(catalog[x_col], dtype=np.float64), np.asarray(catalog[y_col], dtype=np.float64)]) - pixel_origin
    if ra_col and dec_col:
        raise ConfigError("the catalogue has RA/Dec columns but the mosaic has no celestial WCS; give x/y columns")
    raise ConfigError(
        f"the catalogue needs columns {ra!r}/{dec!r} (with a mosaic WCS) or {x!r}/{y!r}; it has: {', '.join(names) or 'none'}"
    )


def _degrees(column) -> np.ndarray:
    unit = getattr(column, "unit", None)
    if unit is not None and str(unit) not in ("", "deg"):
        return np.asarray(column.to("deg").value if hasattr(column, "to") else column, dtype=np.float64)
    return np.asarray(column, dtype=np.float64)


def _has_distortion(wcs: WCS) -> bool:
    return bool(wcs.sip is not None or wcs.cpdis1 is not None or wcs.cpdis2 is not None or wcs.det2im1 is not None)


def cut_stamps(
    image: np.ndarray,
    wcs: WCS | None,
    positions,
    size: int = DEFAULT_STAMP_SIZE,
    fill_value: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut square stamps centred on sources.

    Parameters
    ----------
    image : numpy.ndarray
        2-D mosaic (electrons/s); may be a memory map.
    wcs : astropy.wcs.WCS or None
        The mosaic's WCS (needed only for sky positions).
    positions : astropy.coordinates.SkyCoord or array-like
        Sky positions, or zero-based pixel positions of shape ``(N, 2)`` as (x, y).
    size : int
        Stamp side, pixels (at the mosaic's pixel scale; nothing is resampled).
    fill_value : float
        Value of stamp pixels beyond the image edge (electrons/s).

    Returns
    -------
    stamps : numpy.ndarray
        float32 ``(N, size, size)``; the source sits within half a pixel of
        pixel ``(size // 2, size // 2)``.
    flags : numpy.ndarray
        int32 ``(N,)`` :class:`~legato.flags.StampFlag` bits:
        ``NEAR_EDGE`` (partial overlap, filled), ``OFF_IMAGE | FAILED_VALIDATION``
        (no overlap), ``BAD_PIXELS | FAILED_VALIDATION`` (NaN/inf pixels).
    """
    from astropy.coordinates import SkyCoord

    if np.ndim(image) != 2:
        raise DataError(f"the mosaic must be a 2-D image, got shape {np.shape(image)}")
    if isinstance(positions, SkyCoord):
        if wcs is None:
            raise ConfigError("sky positions need the mosaic's WCS")
        xy = np.column_stack(wcs.world_to_pixel(positions)).reshape(-1, 2)
    else:
        xy = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    stamps = np.full((len(xy), size, size), fill_value, dtype=np.float32)
    flags = np.zeros(len(xy), dtype=FLAG_DTYPE)
    for i, (x, y) in enumerate(xy):
        if not (np.isfinite(x) and np.isfinite(y)):
            flags[i] = StampFlag.OFF_IMAGE | StampFlag.FAILED_VALIDATION
            continue
        try:
            cutout = Cutout2D(
                image, (float(np.floor(x + 0.5)), float(np.floor(y + 0.5))), (size, size), mode="partial", fill_value=np.nan, copy=False
            )
        except NoOverlapError:
            flags[i] = StampFlag.OFF_IMAGE | StampFlag.FAILED_VALIDATION
            continue
        data = cutout.data
        inside = data[cutout.slices_cutout] if cutout.data.shape == (size, size) else data
        if cutout.slices_cutout != (slice(0, size), slice(0, size)):
            flags[i] |= StampFlag.NEAR_EDGE
        if not np.isfinite(inside).all():
            flags[i] |= StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION
        stamps[i][cutout.slices_cutout] = data[cutout.slices_cutout]
    return stamps, flags
