"""Resumable part files and the atomic final catalogue (FITS, ECSV or Parquet).

While a run goes, every finished chunk ``k`` is written (atomically: temporary
name, then rename) as ``OUTPUT.parts/<fingerprint>/part_<k>.parquet``. The
fingerprint hashes the input, the model version and the chunk size, so a rerun
with the same arguments skips the finished parts, and one with other arguments
discards them. At the end the parts are streamed, in chunk order, into a
temporary file next to the output, which is renamed onto ``OUTPUT`` (readers
never see a half-written catalogue); then the parts are removed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from legato.columns import OUTPUT_COLUMNS, UNITS
from legato.errors import ConfigError

FORMATS = {".fits": "fits", ".fit": "fits", ".ecsv": "ecsv", ".parquet": "parquet", ".pq": "parquet"}
PART_PATTERN = "part_{:06d}.parquet"
EXTRA_UNITS = {"sky_sigma": "ct / s", "mag_aper": "mag"}
DESCRIPTIONS = {
    "id": "source id",
    "mag": "total AB magnitude (F160W)",
    "re_arcsec": "half-light radius along the semi-major axis",
    "n": "Sersic index",
    "q": "axis ratio b/a",
    "ellipticity": "1 - q",
    "flags": "StampFlag bits (legato.flags)",
    "sky_sigma": "per-pixel noise the network measured on the stamp (electrons/s)",
    "mag_aper": "AB magnitude in a 1 arcsec radius aperture (input check)",
}


def output_format(path: str | Path) -> str:
    """``fits``, ``ecsv`` or ``parquet`` from the output's extension.

    Raises
    ------
    ConfigError
        For any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"unknown output extension {suffix or '(none)'!r} of {path}; use one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


class PartStore:
    """Finished chunks of one run, as Parquet part files under ``OUTPUT.parts/<fingerprint>/``."""

    def __init__(self, output: str | Path, fingerprint: str):
        self.output = Path(output)
        self.root = self.output.with_name(self.output.name + ".parts")
        self.dir = self.root / fingerprint
        self.fingerprint = fingerprint

    def prepare(self, description: dict) -> set[int]:
        """Create the folder, discard parts of runs with another fingerprint; return the finished chunk indices."""
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other != self.dir:
                    shutil.rmtree(other) if other.is_dir() else other.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()
        (self.dir / "run.json").write_text(json.dumps(description, indent=2, default=str))
        return self.done()

    def done(self) -> set[int]:
        """Indices of the chunks already written."""
        return {int(p.name[5:11]) for p in self.dir.glob("part_*.parquet")}

    def write(self, index: int, table) -> Path:
        """Write one chunk's ``pyarrow.Table`` atomically."""
        import pyarrow.parquet as pq

        path = self.dir / PART_PATTERN.format(index)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path

    def parts(self) -> list[Path]:
        """Part files in chunk order."""
        return sorted(self.dir.glob("part_*.parquet"))

    def remove(self) -> None:
        """Delete every part (after the final file is in place)."""
        shutil.rmtree(self.root, ignore_errors=True)


def part_table(ids: np.ndarray, columns: dict[str, np.ndarray], flags: np.ndarray):
    """One chunk as a ``pyarrow.Table``: ``id``, the value columns in order (float32), ``flags`` (int32)."""
    import pyarrow as pa

    ids = np.asarray(ids)
    id_array = pa.array(ids.astype(str)) if ids.dtype.kind in "USO" else pa.array(ids.astype(np.int64))
    arrays = [id_array] + [pa.array(np.asarray(values, dtype=np.float32)) for values in columns.values()]
    arrays.append(pa.array(np.asarray(flags, dtype=np.int32)))
    return pa.Table.from_arrays(arrays, names=["id", *columns, "flags"])


def column_unit(name: str) -> str:
    """Unit of an output column (uncertainties carry their parameter's unit)."""
    if name in EXTRA_UNITS:
        return EXTRA_UNITS[name]
    base = name.removesuffix("_err95").removesuffix("_err").removeprefix("crb_")
    return UNITS.get(base, "")


def column_description(name: str) -> str | None:
    """Description of an output column."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    for suffix, text in (("_err95", "calibrated 95% interval half-width of {}"), ("_err", "calibrated 1-sigma (68.27%) error of {}")):
        if name.endswith(suffix):
            return text.format(name.removesuffix(suffix))
    if name.startswith("crb_"):
        return f"Cramer-Rao bound (1-sigma) of {name.removeprefix('crb_')} at the estimate"
    return None


def _template(id_type: str, id_width: int, meta: dict, value_names):
    """An empty astropy table with the output's columns, units, descriptions and metadata."""
    from astropy.table import Table

    table = Table(meta=dict(meta))
    table["id"] = np.zeros(0, dtype=f"U{max(id_width, 1)}" if id_type == "str" else np.int64)
    for name in value_names:
        table[name] = np.zeros(0, dtype=np.float32)
        table[name].unit = column_unit(name) or None
    table["flags"] = np.zeros(0, dtype=np.int32)
    for name in table.colnames:
        text = column_description(name)
        if text:
            table[name].description = text
    return table


def scan_parts(parts: list[Path]) -> dict:
    """Row count, id type and width, and flag values of the parts (reading only ``id`` and ``flags``)."""
    import pyarrow.parquet as pq
    import pyarrow.types as pat

    rows, width, id_type, flags = 0, 1, "int", []
    names = [n for n in pq.read_schema(parts[0]).names if n not in ("id", "flags")] if parts else list(OUTPUT_COLUMNS)
    for path in parts:
        table = pq.read_table(path, columns=["id", "flags"])
        rows += table.num_rows
        if pat.is_string(table.schema.field("id").type) or pat.is_large_string(table.schema.field("id").type):
            id_type = "str"
            lengths = [len(s.encode()) for s in table.column("id").to_pylist()]
            width = max([width, *lengths])
        flags.append(table.column("flags").to_numpy())
    return {
        "rows": rows,
        "id_type": id_type,
        "id_width": width,
        "flags": np.concatenate(flags) if flags else np.zeros(0, np.int32),
        "value_names": names,
    }


def finalize(parts: list[Path], output: str | Path, meta: dict, scan: dict | None = None) -> Path:
    """Stream the parts into ``output`` (format by extension) through a temporary file and an atomic rename."""
    output = Path(output)
    fmt = output_format(output)
    scan = scan or scan_parts(parts)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        {"parquet": _write_parquet, "ecsv": _write_ecsv, "fits": _write_fits}[fmt](parts, tmp, meta, scan)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return output


def remove_stale_temporaries(output: str | Path) -> None:
    """Delete temporary outputs left by a killed run."""
    output = Path(output)
    if output.parent.is_dir():
        for stale in output.parent.glob(f".{output.name}.tmp-*"):
            stale.unlink(missing_ok=True)


def _read_part(path: Path, id_type: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if id_type == "str" and not pa.types.is_string(table.schema.field("id").type):
        table = table.set_column(0, "id", table.column("id").cast(pa.string()))
    return table


def _write_parquet(parts, tmp: Path, meta: dict, scan: dict) -> None:
    import pyarrow.parquet as pq

    # astropy's own Parquet writer gives the schema metadata (units, descriptions, meta)
    template_path = tmp.with_name(tmp.name + ".template")
    _template(scan["id_type"], scan["id_width"], meta, scan["value_names"]).write(template_path, format="parquet", overwrite=True)
    schema = pq.read_schema(template_path)
    template_path.unlink()
    with pq.ParquetWriter(tmp, schema) as writer:
        for path in parts:
            writer.write_table(_read_part(path, scan["id_type"]).cast(schema))


def _write_ecsv(parts, tmp: Path, meta: dict, scan: dict) -> None:
    from astropy.table import Table

    buffer = io.StringIO()
    _template(scan["id_type"], scan["id_width"], meta, scan["value_names"]).write(buffer, format="ascii.ecsv")
    with open(tmp, "w") as out:
        out.write(buffer.getvalue())  # the header and the column-name line
        for path in parts:
            chunk = Table(_read_part(path, scan["id_type"]).to_pydict())
            text = io.StringIO()
            chunk.write(text, format="ascii.ecsv")
            lines = text.getvalue().splitlines(keepends=True)
            body = [line for line in lines if not line.startswith("#")][1:]  # drop header and column names
            out.writelines(body)


def _write_fits(parts, tmp: Path, meta: dict, scan: dict) -> None:
    """A binary table written row block by row block: header with the final row count, then the data."""
    from astropy.io import fits

    template = _template(scan["id_type"], scan["id_width"], {}, scan["value_names"])
    hdu = fits.table_to_hdu(template)
    hdu.header["EXTNAME"] = "PREDICTIONS"
    for key, value in meta.items():  # long names as HIERARCH cards, values as scalars
        hdu.header[f"HIERARCH {key.upper()}"] = value if isinstance(value, (int, float, bool)) else str(value)
    hdu.header["NAXIS2"] = scan["rows"]
    dtype = hdu.data.dtype.newbyteorder(">") if hdu.data is not None else None
    dtype = np.dtype([(name, dtype.fields[name][0].newbyteorder(">")) for name in dtype.names])
    with open(tmp, "wb") as out:
        out.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        out.write(hdu.header.tostring().encode("ascii"))
        written = 0
        for path in parts:
            table = _read_part(path, scan["id_type"])
            records = np.empty(table.num_rows, dtype=dtype)
            for name in dtype.names:
                values = table.column(name).to_numpy(zero_copy_only=False)
                records[name] = np.char.encode(values.astype(str), "utf-8") if dtype[name].kind == "S" else values
            out.write(records.tobytes())
            written += records.nbytes
        out.write(b"\0" * (-written % 2880))
