"""Stamp sets on disk: chunked FITS image cubes with label tables.

A stamp set is a folder of ``stamps_NNNNN.fits`` files. Each file has

- HDU 0 (``STAMPS``): a float32 cube ``(N, H, W)`` in electrons/s with the
  keywords PIXSCALE (arcsec/pixel), MAGZPT (AB), BUNIT, FILTER, PSFID, DOMAIN,
  NSTAMPS, CHUNK;
- HDU 1 (``LABELS``): a binary table, one row per stamp in cube order, with
  units on every physical column.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.utils.exceptions import AstropyUserWarning

from legato.conventions import BUNIT
from legato.errors import DataError

CHUNK_PATTERN = "stamps_{:05d}.fits"
CHUNK_GLOB = "stamps_*.fits"


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

    Returns
    -------
    list of Path
        The files written.
    """
    stamps = np.asarray(stamps)
    if stamps.ndim != 3:
        raise DataError(f"stamps must be a 3-D cube (N, H, W), got shape {stamps.shape}")
    if len(labels) != len(stamps):
        raise DataError(f"{len(stamps)} stamps but {len(labels)} label rows")
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
        table_hdu = fits.table_to_hdu(labels[part])
        table_hdu.header["EXTNAME"] = "LABELS"
        path = out_dir / CHUNK_PATTERN.format(chunk)
        fits.HDUList([primary, table_hdu]).writeto(path, overwrite=True)
        paths.append(path)
    return paths


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
                labels = Table.read(hdul["LABELS"])
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
            tables.append(Table.read(path, hdu="LABELS"))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read the labels of {path}: {exc}") from None
    return vstack(tables, metadata_conflicts="silent")
