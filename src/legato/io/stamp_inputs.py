"""Input readers for catalogue inference, yielding fixed-size chunks of stamps.

Every reader walks its input in a deterministic order and cuts it into chunks of
``chunk_size`` rows (the last one shorter): chunk ``k`` always holds the same
rows, which is what makes an interrupted run resumable. A reader never holds
more than one chunk (plus one input file) in memory.

Input kinds
-----------
``cube``
    One FITS file holding a cube ``(N, H, W)`` (the first 3-D image HDU, e.g. a
    stamp-set chunk ``stamps_NNNNN.fits``); ids from its ``LABELS`` table's ``id``
    column when present, else the row index. Read through a memory map.
``directory``
    A folder of FITS files (``*.fits``, ``*.fit``, ``*.fits.gz``), each a 2-D
    stamp (id: the file name without extension) or a 3-D cube (id:
    ``NAME:ID`` with the ``LABELS`` id, or ``NAME:ROW``). Unreadable files are
    reported in :attr:`StampSource.problems` and skipped.
``mosaic``
    A 2-D mosaic image with a WCS plus a source catalogue (RA/Dec or x/y
    columns); stamps are cut with :func:`legato.io.mosaic.cut_stamps`.
``parquet``
    A Parquet file or folder of Parquet shards with an ``id`` column and a
    ``stamp`` column of flattened ``size * size`` float32 arrays (row-major), and
    optionally an ``flags`` column of input flags: the format of the Spark path.

Wrong-size stamps
-----------------
A stamp whose side is not the model's (64 pixels) is centre-cut or zero-padded
to 64x64 around its central pixel ``(H // 2, W // 2)`` at its native pixel
scale (the network was trained at 0.06"/px, so stamps are never resampled) and
flagged ``RESIZED``. A stamp whose WCS (or ``PIXSCALE``) pixel scale differs from
0.06"/px by more than 2% is not predicted (``BAD_PIXSCALE | FAILED_VALIDATION``).
A flattened Parquet stamp of the wrong length cannot be reshaped and is flagged
``FAILED_VALIDATION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from legato.conventions import DEFAULT_STAMP_SIZE, PIXEL_SCALE_ARCSEC
from legato.errors import ConfigError, DataError
from legato.flags import FLAG_DTYPE
from legato.io import stamp_checks

FITS_SUFFIXES = stamp_checks.FITS_SUFFIXES
STAMP_COLUMN = "stamp"
ID_COLUMN = "id"


@dataclass
class Chunk:
    """One chunk of input rows.

    Attributes
    ----------
    index : int
        Position of the chunk in the input (0-based).
    ids : numpy.ndarray
        Source ids (int64 or str).
    stamps : numpy.ndarray
        float32 ``(n, size, size)`` stamps in electrons/s.
    flags : numpy.ndarray
        int32 input flags (:class:`~legato.flags.StampFlag`).
    """

    index: int
    ids: np.ndarray
    stamps: np.ndarray
    flags: np.ndarray


@dataclass
class StampSource:
    """Base class of the readers: chunking, problems report, fingerprint."""

    stamp_size: int = DEFAULT_STAMP_SIZE
    problems: list[dict] = field(default_factory=list)

    kind = "base"

    def fingerprint(self) -> dict:
        """What identifies this input for resuming (paths, sizes, modification times, options)."""
        raise NotImplementedError

    @property
    def total(self) -> int | None:
        """Number of rows when known without reading the data."""
        return None

    def pieces(self) -> Iterator[tuple]:
        """Consecutive ``(ids, stamps, flags)`` pieces of any length, in input order.

        ``stamps`` may be a callable returning the array (read lazily, skipped
        for chunks already done).
        """
        raise NotImplementedError

    def chunks(self, chunk_size: int, skip: set[int] | frozenset = frozenset()) -> Iterator[Chunk]:
        """Fixed-size chunks in input order, leaving out the chunk indices in ``skip`` (not even read)."""
        if chunk_size < 1:
            raise ConfigError(f"chunk size must be positive, got {chunk_size}")
        buffer: list[tuple] = []
        buffered = 0
        index = 0
        for piece in self.pieces():
            buffer.append(piece)
            buffered += len(piece[0])
            while buffered >= chunk_size:
                head, buffer, buffered = _take(buffer, chunk_size)
                if index not in skip:
                    yield _materialise(index, head)
                index += 1
        if buffered:
            head, buffer, buffered = _take(buffer, buffered)
            if index not in skip:
                yield _materialise(index, head)

    def report_problem(self, path, error: str) -> None:
        """Record an input file that could not be used."""
        self.problems.append({"file": str(path), "error": str(error)})


def _take(buffer: list[tuple], n: int):
    """Split ``n`` rows off the front of a list of pieces."""
    head, rest, taken = [], [], 0
    for ids, stamps, flags in buffer:
        if taken >= n:
            rest.append((ids, stamps, flags))
            continue
        need = n - taken
        if len(ids) <= need:
            head.append((ids, stamps, flags))
            taken += len(ids)
        else:
            head.append((ids[:need], _lazy_slice(stamps, 0, need), flags[:need]))
            rest.append((ids[need:], _lazy_slice(stamps, need, len(ids)), flags[need:]))
            taken = n
    return head, rest, sum(len(p[0]) for p in rest)


def _lazy_slice(stamps, start: int, stop: int):
    if callable(stamps):
        return lambda: stamps()[start:stop]
    return stamps[start:stop]


def _materialise(index: int, pieces: list[tuple]) -> Chunk:
    ids = np.concatenate([np.asarray(p[0]) for p in pieces])
    stamps = np.concatenate([np.asarray(p[1]() if callable(p[1]) else p[1], dtype=np.float32) for p in pieces])
    flags = np.concatenate([np.asarray(p[2], dtype=FLAG_DTYPE) for p in pieces])
    return Chunk(index, ids, stamps, flags)


def file_signature(path: str | Path) -> dict:
    """Path, size and modification time of a file (for resume fingerprints)."""
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def fit_to_size(stamp: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Centre-cut or zero-pad one 2-D stamp (:func:`legato.io.stamp_checks.fit_to_size`)."""
    return stamp_checks.fit_to_size(stamp, size)


def pixel_scale_flags(header, expected: float = PIXEL_SCALE_ARCSEC) -> int:
    """``BAD_PIXSCALE | FAILED_VALIDATION`` when the header's pixel scale is off by more than 2%."""
    return stamp_checks.pixel_scale_flags(header, expected)


def _open_fits(path: Path, memmap: bool):
    """Open a FITS file, a truncated one being an error (not a warning)."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        return fits.open(path, memmap=memmap)


def _label_ids(hdul, start: int = 0, stop: int | None = None):
    """The ``id`` column of a ``LABELS`` table HDU, or None."""
    if "LABELS" not in hdul:
        return None
    data = hdul["LABELS"].data
    if data is None or ID_COLUMN not in data.columns.names:
        return None
    return np.asarray(data[ID_COLUMN][start:stop])


@dataclass
class CubeSource(StampSource):
    """A FITS cube ``(N, H, W)`` of stamps, read through a memory map."""

    path: Path = None
    hdu: int | str | None = None
    kind = "cube"

    def __post_init__(self):
        self.path = Path(self.path)
        try:
            hdul = _open_fits(self.path, memmap=True)
            image = stamp_checks.stamp_hdu(hdul, self.hdu)
            if image.header.get("NAXIS") != 3:
                raise DataError(f"expected a 3-D cube, got {image.header.get('NAXIS')} axes")
            self._hdul, self._image = hdul, image
            self._n = int(image.header["NAXIS3"])
            self._shape = (int(image.header["NAXIS2"]), int(image.header["NAXIS1"]))
            self._scale_flags = pixel_scale_flags(image.header)
        except FileNotFoundError:
            raise DataError(f"input not found: {self.path}") from None
        except DataError as exc:
            raise DataError(f"cannot read stamp cube {self.path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - astropy raises many types for a broken file
            raise DataError(f"cannot read stamp cube {self.path}: {exc}") from None

    @property
    def total(self) -> int:
        return self._n

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "file": file_signature(self.path), "hdu": self.hdu}

    def pieces(self):
        ids = _label_ids(self._hdul)
        ids = np.arange(self._n, dtype=np.int64) if ids is None else ids
        if len(ids) != self._n:
            raise DataError(f"{self.path}: {self._n} stamps but {len(ids)} label ids")
        step = 1024
        for start in range(0, self._n, step):
            stop = min(start + step, self._n)
            flags = np.full(stop - start, self._scale_flags, dtype=FLAG_DTYPE)
            yield ids[start:stop], self._reader(start, stop, flags), flags

    def _reader(self, start: int, stop: int, flags: np.ndarray):
        size = self.stamp_size

        def read():
            data = np.asarray(self._image.data[start:stop], dtype=np.float32)
            if data.shape[1:] == (size, size):
                return data
            out = np.empty((len(data), size, size), dtype=np.float32)
            for i, stamp in enumerate(data):
                out[i], extra = fit_to_size(stamp, size)
                flags[i] |= extra
            return out

        return read


@dataclass
class DirectorySource(StampSource):
    """A folder of FITS stamps (2-D) or cubes (3-D), or one 2-D stamp file; unreadable files are reported and skipped."""

    path: Path = None
    hdu: int | str | None = None
    kind = "directory"

    def __post_init__(self):
        self.path = Path(self.path)
        if self.path.is_file():  # one 2-D stamp file: a folder of one
            self.files = [self.path]
            return
        if not self.path.is_dir():
            raise DataError(f"input folder not found: {self.path}")
        self.files = sorted(p for p in self.path.iterdir() if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
        if not self.files:
            raise DataError(f"no FITS files ({', '.join(FITS_SUFFIXES)}) in {self.path}")

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "files": [file_signature(p) for p in self.files], "hdu": self.hdu}

    def pieces(self):
        self.problems.clear()
        for path in self.files:
            try:
                ids, stamps, flags = self.read_file(path)
            except Exception as exc:  # noqa: BLE001 - report any unreadable file and go on
                self.report_problem(path.name, _one_line(exc))
                continue
            yield ids, stamps, flags

    def read_file(self, path: Path):
        """Stamps of one file: ``(ids, stamps (n, size, size), flags)`` (:func:`stamp_checks.read_fits_stamps`)."""
        return stamp_checks.read_fits_stamps(path, self.stamp_size, PIXEL_SCALE_ARCSEC, self.hdu)


def _one_line(exc: Exception) -> str:
    return stamp_checks.one_line(exc)


@dataclass
class MosaicSource(StampSource):
    """Stamps cut from a mosaic at the positions of a source catalogue."""

    path: Path = None
    catalog: Path = None
    id_column: str | None = None
    ra: str = "ra"
    dec: str = "dec"
    x: str = "x"
    y: str = "y"
    pixel_origin: int = 1
    hdu: int | str | None = None
    kind = "mosaic"

    def __post_init__(self):
        from legato.io.mosaic import catalog_positions, read_mosaic

        self.path, self.catalog = Path(self.path), Path(self.catalog)
        self.image, self.wcs, header = read_mosaic(self.path, hdu=self.hdu)
        flags = pixel_scale_flags(header)
        if flags:
            raise DataError(
                f'mosaic {self.path} has pixel scale {stamp_checks.header_pixel_scale(header):.4f}"/px; the model needs '
                f'{PIXEL_SCALE_ARCSEC}"/px'
            )
        table = read_catalog(self.catalog)
        self.positions = catalog_positions(table, self.wcs, ra=self.ra, dec=self.dec, x=self.x, y=self.y, pixel_origin=self.pixel_origin)
        self.ids = catalog_ids(table, self.id_column)

    @property
    def total(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> dict:
        return {
            "kind": self.kind,
            "mosaic": file_signature(self.path),
            "catalog": file_signature(self.catalog),
            "columns": [self.id_column, self.ra, self.dec, self.x, self.y, self.pixel_origin],
            "hdu": self.hdu,
        }

    def pieces(self):
        from legato.io.mosaic import cut_stamps

        step = 1024
        for start in range(0, len(self.ids), step):
            stop = min(start + step, len(self.ids))
            flags = np.zeros(stop - start, dtype=FLAG_DTYPE)

            def read(start=start, stop=stop, flags=flags):
                stamps, cut_flags = cut_stamps(self.image, self.wcs, self.positions[start:stop], self.stamp_size)
                flags |= cut_flags
                return stamps

            yield self.ids[start:stop], read, flags


def read_catalog(path: Path):
    """A source catalogue (FITS, ECSV, CSV, Parquet, any astropy-readable table)."""
    from astropy.table import Table

    if not Path(path).is_file():
        raise DataError(f"catalogue not found: {path}")
    kwargs = {"format": "ascii.csv"} if str(path).lower().endswith(".csv") else {}
    try:
        return Table.read(path, **kwargs)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types for a broken file
        raise DataError(f"cannot read catalogue {path}: {_one_line(exc)}") from None


def catalog_ids(table, id_column: str | None = None) -> np.ndarray:
    """Ids of catalogue rows: ``id_column``, else a column named id/ID/NUMBER, else the row index."""
    lower = {name.lower(): name for name in table.colnames}
    if id_column is not None:
        if id_column.lower() not in lower:
            raise ConfigError(f"the catalogue has no id column {id_column!r}; it has: {', '.join(table.colnames)}")
        return np.asarray(table[lower[id_column.lower()]])
    for name in ("id", "number", "source_id", "objid"):
        if name in lower:
            return np.asarray(table[lower[name]])
    return np.arange(len(table), dtype=np.int64)


@dataclass
class ParquetSource(StampSource):
    """Parquet shards with ``id`` and flattened ``stamp`` columns (optionally input ``flags``)."""

    path: Path = None
    kind = "parquet"

    def __post_init__(self):
        import pyarrow.parquet as pq

        self.path = Path(self.path)
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*.parquet") if p.is_file())
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise DataError(f"input not found: {self.path}")
        if not self.files:
            raise DataError(f"no Parquet files in {self.path}")
        self._rows = []
        for path in self.files:
            try:
                meta = pq.ParquetFile(path)
                names = meta.schema_arrow.names
                if ID_COLUMN not in names or STAMP_COLUMN not in names:
                    raise DataError(f"needs columns {ID_COLUMN!r} and {STAMP_COLUMN!r}, has {', '.join(names)}")
                self._rows.append(meta.metadata.num_rows)
            except Exception as exc:  # noqa: BLE001
                self.report_problem(path.name, _one_line(exc))
                self._rows.append(None)

    @property
    def total(self) -> int:
        return sum(n for n in self._rows if n)

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "files": [file_signature(p) for p in self.files]}

    def pieces(self):
        import pyarrow.parquet as pq

        size = self.stamp_size
        for path, rows in zip(self.files, self._rows):
            if rows is None:
                continue
            parquet = pq.ParquetFile(path)
            columns = [c for c in (ID_COLUMN, STAMP_COLUMN, "flags") if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=1024, columns=columns):
                ids = batch.column(ID_COLUMN).to_numpy(zero_copy_only=False)
                flags = (
                    batch.column("flags").to_numpy(zero_copy_only=False).astype(FLAG_DTYPE)
                    if "flags" in columns
                    else np.zeros(len(ids), dtype=FLAG_DTYPE)
                )
                yield ids, _flat_reader(batch.column(STAMP_COLUMN), size, flags), flags


def _flat_reader(column, size: int, flags: np.ndarray):
    def read():
        return flat_to_stamps(column, size, flags)

    return read


def flat_to_stamps(column, size: int, flags: np.ndarray) -> np.ndarray:
    """Flattened stamps to ``(n, size, size)`` (:func:`legato.io.stamp_checks.flat_to_stamps`)."""
    return stamp_checks.flat_to_stamps(column, size, flags)


def open_source(
    input_path: str | Path,
    catalog: str | Path | None = None,
    stamp_size: int = DEFAULT_STAMP_SIZE,
    hdu: int | str | None = None,
    **catalog_options,
) -> StampSource:
    """The reader for an input: a catalogue means a mosaic; a folder of FITS files, or one 2-D FITS
    stamp, a directory; a folder of Parquet shards or a ``.parquet`` file Parquet; any other file a FITS cube.

    Raises
    ------
    DataError
        If the input does not exist or cannot be read.
    """
    path = Path(input_path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if catalog is not None:
        return MosaicSource(stamp_size=stamp_size, path=path, catalog=Path(catalog), hdu=hdu, **catalog_options)
    if path.is_dir():
        if any(p.name.lower().endswith(FITS_SUFFIXES) for p in path.iterdir()):
            return DirectorySource(stamp_size=stamp_size, path=path, hdu=hdu)
        return ParquetSource(stamp_size=stamp_size, path=path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return ParquetSource(stamp_size=stamp_size, path=path)
    if image_axes(path, hdu) == 2:
        return DirectorySource(stamp_size=stamp_size, path=path, hdu=hdu)
    return CubeSource(stamp_size=stamp_size, path=path, hdu=hdu)


def image_axes(path: Path, hdu: int | str | None = None) -> int | None:
    """Number of axes of a FITS file's stamp image (None when it cannot be read: the cube reader says why)."""
    try:
        with _open_fits(path, memmap=True) as hdul:
            return stamp_checks.stamp_hdu(hdul, hdu).header.get("NAXIS")
    except Exception:  # noqa: BLE001 - any unreadable file goes to the cube reader, whose error names the problem
        return None


def fingerprint_hash(items: dict) -> str:
    """A short stable hash of a JSON-able description."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]
