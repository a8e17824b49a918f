"""Per-stamp checks and readers shared by the local and the Spark paths.

Spark ships this module's functions to the Python workers by value
(``cloudpickle.register_pickle_by_value``), so a worker whose ``sys.path``
starts with the (possibly older) ``legato`` code bundled in a logged model
still runs exactly this code. It therefore takes from ``legato`` only plain
integers (the flag bits of :mod:`legato.flags`), which travel with the
functions. Both paths call the same functions, which is what makes their flags
identical row for row.
"""

from __future__ import annotations

import warnings

import numpy as np

from legato.flags import (  # plain integers, captured by value with the functions that use them
    BAD_PIXELS,
    BAD_PIXSCALE,
    FAILED_VALIDATION,
    FLAG_DTYPE,
    NO_SOURCE,
    OFF_IMAGE,
    RESIZED,
)

NOT_PREDICTED = BAD_PIXELS | OFF_IMAGE | FAILED_VALIDATION | BAD_PIXSCALE
PIXSCALE_TOLERANCE = 0.02
#: |pixel| above this (electrons/s) is not a measurement (a fill value such as -1e30): nothing in
#: an F160W image comes within orders of magnitude of it (a saturated star core is ~1e5 e/s)
MAX_PIXEL_VALUE = 1e10
#: the aperture of the source check: radius 1 arcsec at the models' 0.06 arcsec/pixel
#: (conventions.PIXEL_SCALE_ARCSEC, repeated: this module takes only the flag bits from legato)
SOURCE_APERTURE_PIX = 1.0 / 0.06
#: the noise of the source check comes from the stamp's outer frame of this width, in blocks of
#: NOISE_BLOCK_PIX x NOISE_BLOCK_PIX pixels (block means keep correlated noise honest)
NOISE_FRAME_PIX = 8
NOISE_BLOCK_PIX = 4
#: a stamp whose aperture S/N lies below this holds no measurable source. Pure-noise stamps
#: (white or correlated) fall below it 94-98% of the time; the faintest galaxies of the simulated
#: test set, the realistic set and the real UDS stamps have S/N 5.6, 4.7 and 4.1
MIN_SOURCE_SNR = 3.0
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts")
CELESTIAL_PREFIXES = ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT")


def check_stamps(stamps: np.ndarray, flags) -> np.ndarray:
    """Input flags completed with the stamp checks.

    NaN/inf pixels, or non-physical ones (``|value| > MAX_PIXEL_VALUE``, e.g. a
    -1e30 fill value), give ``BAD_PIXELS | FAILED_VALIDATION``; a constant stamp
    (e.g. all zeros: no data) gives ``FAILED_VALIDATION``; a stamp with no
    measurable source (:func:`source_snr` below ``MIN_SOURCE_SNR``, e.g. pure
    noise) gives ``NO_SOURCE | FAILED_VALIDATION``. Returns a new int32 array; a
    row is predicted when ``flags & NOT_PREDICTED == 0``.
    """
    flags = np.array(flags, dtype=FLAG_DTYPE, copy=True)
    if len(stamps) == 0:
        return flags
    stamps = np.asarray(stamps)
    flat = stamps.reshape(len(stamps), -1)
    with np.errstate(invalid="ignore"):
        high, low = flat.max(axis=1), flat.min(axis=1)  # NaN and inf reach one of them
        finite = np.isfinite(high) & np.isfinite(low)
        extreme = finite & ((high > MAX_PIXEL_VALUE) | (low < -MAX_PIXEL_VALUE))
        constant = finite & (high == low)
    flags[~finite | extreme] |= BAD_PIXELS | FAILED_VALIDATION
    flags[constant & ~extreme] |= FAILED_VALIDATION
    measurable = np.flatnonzero(finite & ~extreme & ~constant)
    if len(measurable):
        empty = ~(source_snr(stamps[measurable]) >= MIN_SOURCE_SNR)
        flags[measurable[empty]] |= NO_SOURCE | FAILED_VALIDATION
    return flags


def source_snr(stamps: np.ndarray) -> np.ndarray:
    """Signal-to-noise of the flux in the central 1-arcsec aperture of each stamp ``(N, H, W)``.

    Background and noise come from the stamp itself: the median and the
    normalised median absolute deviation of the means of ``NOISE_BLOCK_PIX``-square
    blocks in the outer ``NOISE_FRAME_PIX`` pixels. Block means carry the noise
    correlation of drizzled images, so the aperture error (block sigma times the
    square root of the number of blocks in the aperture) holds for white and
    correlated noise alike. A noiseless stamp has S/N +inf (flux) or NaN (none).
    """
    stamps = np.asarray(stamps)
    size = stamps.shape[-1]
    blocks = size // NOISE_BLOCK_PIX
    frame, aperture = _source_masks(size)
    cut = stamps[:, : blocks * NOISE_BLOCK_PIX, : blocks * NOISE_BLOCK_PIX]
    means = cut.reshape(len(stamps), blocks, NOISE_BLOCK_PIX, blocks, NOISE_BLOCK_PIX).mean(axis=(2, 4), dtype=np.float64)
    border = means[:, frame]
    background = np.median(border, axis=1)
    block_sigma = 1.4826 * np.median(np.abs(border - background[:, None]), axis=1)
    pixels = aperture.sum()
    flux = np.einsum("nij,ij->n", stamps, aperture.astype(stamps.dtype), dtype=np.float64) - background * pixels
    error = block_sigma * NOISE_BLOCK_PIX * np.sqrt(pixels)
    with np.errstate(divide="ignore", invalid="ignore"):
        return flux / error


def aperture_mask(size: int, radius_pix: float) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the circular aperture of ``radius_pix`` pixels centred on pixel ``(size // 2, size // 2)``."""
    centre = size // 2
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= radius_pix**2


def _source_masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The outer frame of the ``size // NOISE_BLOCK_PIX`` block grid, and the central aperture (pixels)."""
    blocks = size // NOISE_BLOCK_PIX
    frame = np.ones((blocks, blocks), dtype=bool)
    inner = NOISE_FRAME_PIX // NOISE_BLOCK_PIX
    frame[inner:-inner, inner:-inner] = False
    return frame, aperture_mask(size, SOURCE_APERTURE_PIX)


def flat_to_stamps(rows, size: int, flags: np.ndarray) -> np.ndarray:
    """Flattened (row-major) stamps to a float32 cube ``(n, size, size)``.

    ``rows`` is an Arrow list array or a sequence of 1-D arrays. A null row or
    one of the wrong length becomes an all-zero stamp flagged
    ``FAILED_VALIDATION`` in ``flags`` (modified in place).
    """
    n = len(rows)
    try:
        import pyarrow as pa

        if isinstance(rows, pa.ChunkedArray):
            rows = rows.combine_chunks()
        if isinstance(rows, pa.Array):
            lengths = rows.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)
            if n and (lengths == size * size).all():
                values = rows.flatten().to_numpy(zero_copy_only=False)
                return np.asarray(values, dtype=np.float32).reshape(n, size, size)
            rows = rows.to_numpy(zero_copy_only=False)
    except ImportError:  # pragma: no cover - pyarrow is a dependency of the project
        pass
    out = np.zeros((n, size, size), dtype=np.float32)
    for i, row in enumerate(rows):
        values = None if row is None else np.asarray(row, dtype=np.float32).ravel()
        if values is None or values.size != size * size:
            flags[i] |= FAILED_VALIDATION
        else:
            out[i] = values.reshape(size, size)
    return out


def fit_to_size(stamp: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Centre-cut or zero-pad one 2-D stamp to ``size x size`` at its native pixel scale.

    The input's central pixel ``(H // 2, W // 2)`` becomes pixel
    ``(size // 2, size // 2)``, the centre of the training stamps; nothing is
    resampled. Returns the float32 stamp and ``RESIZED`` (or 0 if the shape was right).
    """
    stamp = np.asarray(stamp, dtype=np.float32)
    height, width = stamp.shape
    if (height, width) == (size, size):
        return stamp, 0
    out = np.zeros((size, size), dtype=np.float32)
    rows = _overlap(height, size)
    cols = _overlap(width, size)
    out[rows[1], cols[1]] = stamp[rows[0], cols[0]]
    return out, RESIZED


def _overlap(n_in: int, n_out: int) -> tuple[slice, slice]:
    """Source and destination slices placing input pixel ``n_in // 2`` at output pixel ``n_out // 2``."""
    shift = n_out // 2 - n_in // 2  # output index = input index + shift
    start_in, stop_in = max(0, -shift), min(n_in, n_out - shift)
    return slice(start_in, stop_in), slice(start_in + shift, stop_in + shift)


def header_pixel_scale(header) -> float | None:
    """Pixel scale in arcsec/pixel from ``PIXSCALE`` or a celestial CD/CDELT(+PC) matrix (None if absent)."""
    if "PIXSCALE" in header:
        return float(header["PIXSCALE"])
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    if not all(c.startswith(CELESTIAL_PREFIXES) for c in ctypes):
        return None
    if any(f"CD{i}_{j}" in header for i in (1, 2) for j in (1, 2)):
        matrix = np.array([[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)] for i in (1, 2)])
    elif "CDELT1" in header and "CDELT2" in header:
        pc = np.array([[float(header.get(f"PC{i}_{j}", 1.0 if i == j else 0.0)) for j in (1, 2)] for i in (1, 2)])
        matrix = np.diag([float(header["CDELT1"]), float(header["CDELT2"])]) @ pc
    else:
        return None
    return float(np.sqrt(abs(np.linalg.det(matrix))) * 3600.0)


def pixel_scale_flags(header, expected: float) -> int:
    """``BAD_PIXSCALE | FAILED_VALIDATION`` when the header's pixel scale is off by more than 2%, else 0."""
    scale = header_pixel_scale(header)
    if scale is None or abs(scale / expected - 1.0) <= PIXSCALE_TOLERANCE:
        return 0
    return BAD_PIXSCALE | FAILED_VALIDATION


def file_stem(name: str) -> str:
    """A FITS file name without its extension (``H.gf1.fits`` -> ``H.gf1``)."""
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def stamp_hdu(hdul, hdu=None):
    """The HDU holding the stamps: ``hdu`` if given, else the first 2-D/3-D image whose header
    has a celestial WCS or ``PIXSCALE``, else the first 2-D/3-D image."""
    if hdu is not None:
        return hdul[hdu]
    images = [h for h in hdul if h.is_image and h.header.get("NAXIS", 0) in (2, 3)]
    if not images:
        raise ValueError("no 2-D or 3-D image HDU")
    for h in images:
        if "PIXSCALE" in h.header or str(h.header.get("CTYPE1", "")).upper().startswith(CELESTIAL_PREFIXES):
            return h
    return images[0]


def read_fits_stamps(path, size: int, expected_scale: float, hdu=None):
    """Every stamp of one FITS file, fitted to ``size x size``.

    A 2-D image is one stamp with id the file name without extension; a 3-D cube
    gives ids ``NAME:ID`` (``id`` column of a ``LABELS`` table) or ``NAME:ROW``.

    Returns
    -------
    ids : numpy.ndarray of str
    stamps : numpy.ndarray
        float32 ``(n, size, size)``.
    flags : numpy.ndarray
        int32 input flags (``RESIZED``, ``BAD_PIXSCALE | FAILED_VALIDATION``).

    Raises
    ------
    Exception
        Whatever astropy raises for a corrupt or truncated file (a truncated
        file's warning is raised as an error).
    """
    from pathlib import Path

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    path = Path(path)
    name = file_stem(path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        with fits.open(path, memmap=False) as hdul:
            image = stamp_hdu(hdul, hdu)
            if image.data is None:
                raise ValueError("empty image HDU")
            data = np.asarray(image.data, dtype=np.float32)
            scale_flags = pixel_scale_flags(image.header, expected_scale)
            if data.ndim == 2:
                ids, data = np.array([name]), data[None]
            else:
                labels = None
                if "LABELS" in hdul and hdul["LABELS"].data is not None and "id" in hdul["LABELS"].data.columns.names:
                    labels = np.asarray(hdul["LABELS"].data["id"])
                rows = labels if labels is not None and len(labels) == len(data) else np.arange(len(data))
                ids = np.array([f"{name}:{r}" for r in rows])
    stamps = np.empty((len(data), size, size), dtype=np.float32)
    flags = np.full(len(data), scale_flags, dtype=FLAG_DTYPE)
    for i, stamp in enumerate(data):
        stamps[i], extra = fit_to_size(stamp, size)
        flags[i] |= extra
    return ids, stamps, flags


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
