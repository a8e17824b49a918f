"""Stamp sets on disk: chunked FITS image cubes with label tables.

A stamp set is a folder of ``stamps_NNNNN.fits`` files. Each file has

- HDU 0 (``STAMPS``): a float32 cube ``(N, H, W)`` in electrons/s with the
  keywords PIXSCALE (arcsec/pixel), MAGZPT (AB), BUNIT, FILTER, PSFID, DOMAIN,
  NSTAMPS, CHUNK;
- HDU 1 (``LABELS``): a binary table, one row per stamp in cube order, with
  units on every physical column (a unit the FITS standard lacks, such as
  ``electron / s``, is written in astropy's generic form and read back as that
  unit by the readers here);
- optionally HDU 2 (``NBRMASK``): a uint8 cube ``(N, H, W)``, 1 on the pixels
  of sources other than the target (neighbours to mask in a fit or a loss),
  0 elsewhere. Sets of real stamps (``legato ingest``) carry it; simulated sets
  do not. :func:`read_stamp_masks` reads it (``None`` for a set without it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.utils.exceptions import AstropyUserWarning

from legato.conventions import BUNIT
from legato.errors import DataError

CHUNK_PATTERN = "stamps_{:05d}.fits"
CHUNK_GLOB = "stamps_*.fits"
MASK_EXTNAME = "NBRMASK"


@dataclass(frozen=True)
class StampSetMeta:
    """Header metadata shared by every chunk of a stamp set."""

    pixel_scale: float
    zeropoint: float
    band: str
    psf_id: str
    domain: str
    extra: dict = field(default_factory=dict)

    def header(self) -> fits.Header:
        """FITS header cards for this metadata."""
        header = fits.Header()
        header["PIXSCALE"] = (self.pixel_scale, "arcsec / pixel")
        header["MAGZPT"] = (self.zeropoint, "AB magnitude of 1 electron/s")
        header["BUNIT"] = (BUNIT, "pixel unit")
        header["FILTER"] = (self.band, "band")
        header["PSFID"] = (self.psf_id, "PSF identifier")
        header["DOMAIN"] = (self.domain, "origin of the stamps")
        for key, value in self.extra.items():
            header[key] = value
        return header


def write_stamp_set(
    out_dir: str | Path,
    stamps: np.ndarray,
    labels: Table,
    meta: StampSetMeta,
    chunk_size: int = 5_000,
    masks: np.ndarray | None = None,
) -> list[Path]:
    """Write stamps and their labels as chunked FITS files.

    Parameters
    ----------
    out_dir : str or Path
        Folder to create (must not hold another stamp set).
    stamps : numpy.ndarray
        ``(N, H, W)`` images in electrons/s.
    labels : astropy.table.Table
        ``N`` rows, in the same order as ``stamps``.
    meta : StampSetMeta
        Header metadata.
    chunk_size : int
        Stamps per file.
    masks : numpy.ndarray, optional
        ``(N, H, W)`` boolean (or 0/1) neighbour masks, the stamps' shape, True on
        pixels to leave out; written as the uint8 ``NBRMASK`` extension of every chunk.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    DataError
        If the cube is not 3-D, or the labels or masks do not match the stamps.
    """
    stamps = np.asarray(stamps)
    if stamps.ndim != 3:
        raise DataError(f"stamps must be a 3-D cube (N, H, W), got shape {stamps.shape}")
    if len(labels) != len(stamps):
        raise DataError(f"{len(stamps)} stamps but {len(labels)} label rows")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != stamps.shape:
            raise DataError(f"masks of shape {masks.shape} do not match the stamps' {stamps.shape}")
        masks = (masks != 0).astype(np.uint8)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(CHUNK_GLOB):
        old.unlink()
    paths = []
    n_chunks = max(1, -(-len(stamps) // chunk_size))
    for chunk in range(n_chunks):
        part = slice(chunk * chunk_size, (chunk + 1) * chunk_size)
        header = meta.header()
        header["NSTAMPS"] = (len(stamps[part]), "stamps in this file")
        header["CHUNK"] = (chunk, "chunk index in the set")
        header["NCHUNKS"] = (n_chunks, "chunks in the set")
        primary = fits.PrimaryHDU(stamps[part].astype(np.float32), header=header)
        primary.header["EXTNAME"] = "STAMPS"
        table_hdu = _labels_hdu(labels[part])
        table_hdu.header["EXTNAME"] = "LABELS"
        hdus = [primary, table_hdu]
        if masks is not None:
            mask_hdu = fits.ImageHDU(masks[part], name=MASK_EXTNAME)
            mask_hdu.header["COMMENT"] = "1 = pixel of a neighbouring source (not the target), 0 = target or sky"
            hdus.append(mask_hdu)
        path = out_dir / CHUNK_PATTERN.format(chunk)
        fits.HDUList(hdus).writeto(path, overwrite=True)
        paths.append(path)
    return paths


def _labels_hdu(labels: Table) -> fits.BinTableHDU:
    """The label table as an HDU; a unit outside the FITS standard (``electron / s``) goes to TUNITn in generic form."""
    plain = labels.copy(copy_data=False)
    generic = {}
    for index, name in enumerate(plain.colnames, start=1):
        unit = plain[name].unit
        if unit is None:
            continue
        try:
            u.Unit(unit).to_string("fits")
        except ValueError:
            generic[index] = u.Unit(unit).to_string()
            plain[name].unit = None  # astropy would drop it with a warning
    hdu = fits.table_to_hdu(plain)
    for index, text in generic.items():
        hdu.header[f"TUNIT{index}"] = text
    return hdu


def _read_labels_table(source, **kwargs) -> Table:
    """Read a label table, restoring the units written in generic form (see :func:`_labels_hdu`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)  # 'electron / s' is not a FITS unit
        table = Table.read(source, **kwargs)
    for name in table.colnames:
        unit = table[name].unit
        if isinstance(unit, u.UnrecognizedUnit):
            try:
                table[name].unit = u.Unit(str(unit))
            except ValueError:
                pass
    return table


def read_stamp_chunk(path: str | Path) -> tuple[np.ndarray, Table, fits.Header]:
    """Read one chunk file.

    Returns
    -------
    stamps : numpy.ndarray
        float32 cube ``(N, H, W)``.
    labels : astropy.table.Table
        The chunk's label table.
    header : astropy.io.fits.Header
        The stamp cube's header.

    Raises
    ------
    DataError
        If the file is missing, truncated or not a stamp chunk.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # astropy only warns about a truncated file; here it is an error
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(path, memmap=False) as hdul:
                stamps = np.asarray(hdul[0].data, dtype=np.float32)
                header = hdul[0].header.copy()
                labels = _read_labels_table(hdul["LABELS"])
    except FileNotFoundError:
        raise DataError(f"stamp file not found: {path}") from None
    except (OSError, KeyError, ValueError, TypeError, IndexError, AstropyUserWarning) as exc:
        raise DataError(f"cannot read stamp file {path}: {exc}") from None
    if stamps.ndim != 3 or len(labels) != len(stamps):
        raise DataError(f"stamp file {path} is not a stamp chunk (cube {stamps.shape}, {len(labels)} labels)")
    return stamps, labels, header


def chunk_paths(set_dir: str | Path) -> list[Path]:
    """Chunk files of a stamp set in order.

    Raises
    ------
    DataError
        If the folder does not exist or holds no chunk.
    """
    set_dir = Path(set_dir)
    paths = sorted(set_dir.glob(CHUNK_GLOB))
    if not paths:
        raise DataError(f"no stamp set in {set_dir} (expected {CHUNK_GLOB} files)")
    return paths


def iter_stamp_set(set_dir: str | Path) -> Iterator[tuple[np.ndarray, Table, fits.Header]]:
    """Iterate over the chunks of a stamp set, one chunk in memory at a time."""
    for path in chunk_paths(set_dir):
        yield read_stamp_chunk(path)


def read_stamp_set(set_dir: str | Path) -> tuple[np.ndarray, Table, fits.Header]:
    """Read a whole stamp set into memory.

    Returns
    -------
    stamps : numpy.ndarray
        ``(N, H, W)`` float32 cube.
    labels : astropy.table.Table
        All label rows.
    header : astropy.io.fits.Header
        Header of the first chunk.
    """
    cubes, tables, header = [], [], None
    for stamps, labels, chunk_header in iter_stamp_set(set_dir):
        cubes.append(stamps)
        tables.append(labels)
        header = header if header is not None else chunk_header
    return np.concatenate(cubes), vstack(tables, metadata_conflicts="silent"), header


def read_stamp_masks(set_dir: str | Path) -> np.ndarray | None:
    """The neighbour masks of a stamp set (the ``NBRMASK`` extensions), or None when it has none.

    Parameters
    ----------
    set_dir : str or Path
        Stamp-set folder.

    Returns
    -------
    numpy.ndarray or None
        Boolean ``(N, H, W)`` cube in the order of :func:`read_stamp_set`, True on
        neighbour pixels; None when no chunk of the set has masks.

    Raises
    ------
    DataError
        If the folder holds no chunk, a chunk cannot be read, only some chunks
        have masks, or a chunk's masks do not match its ``NSTAMPS``.
    """
    cubes, missing = [], []
    for path in chunk_paths(set_dir):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", AstropyUserWarning)
                with fits.open(path, memmap=False) as hdul:
                    n_stamps = hdul[0].header.get("NSTAMPS")
                    if MASK_EXTNAME not in hdul:
                        missing.append(path.name)
                        continue
                    mask = np.asarray(hdul[MASK_EXTNAME].data) != 0
        except (OSError, KeyError, ValueError, TypeError, IndexError, AstropyUserWarning) as exc:
            raise DataError(f"cannot read the masks of {path}: {exc}") from None
        if mask.ndim != 3 or (n_stamps is not None and len(mask) != n_stamps):
            raise DataError(f"the {MASK_EXTNAME} extension of {path} has shape {mask.shape}, expected {n_stamps} masks")
        cubes.append(mask)
    if not cubes:
        return None
    if missing:
        raise DataError(f"stamp set {set_dir}: chunks {', '.join(missing)} have no {MASK_EXTNAME} extension while others do")
    return np.concatenate(cubes)


def read_labels(set_dir: str | Path) -> Table:
    """The label rows of a stamp set, without reading its stamps.

    Raises
    ------
    DataError
        If the folder holds no chunk or a chunk has no label table.
    """
    tables = []
    for path in chunk_paths(set_dir):
        try:
            tables.append(_read_labels_table(path, hdu="LABELS"))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read the labels of {path}: {exc}") from None
    return vstack(tables, metadata_conflicts="silent")


def load_split(set_dir, limit: int | None = None):
    """Stamps ``(N, H, W)`` float32 and their label table, optionally the first ``limit`` only."""
    stamps, labels, header = read_stamp_set(set_dir)
    if limit is not None:
        stamps, labels = stamps[:limit], labels[:limit]
    return stamps, labels, header
