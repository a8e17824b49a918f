"""Reader for the van der Wel et al. (2012, 2014) GALFIT single-Sérsic catalogues.

The format is whitespace-separated text with the columns
``NUMBER RA DEC f mag dmag re dre n dn q dq pa dpa sn`` and ``#`` comments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from legato.errors import DataError

COLUMNS = ("NUMBER", "RA", "DEC", "f", "mag", "dmag", "re", "dre", "n", "dn", "q", "dq", "pa", "dpa", "sn")
UNITS = {
    "RA": u.deg,
    "DEC": u.deg,
    "mag": u.mag,
    "dmag": u.mag,
    "re": u.arcsec,
    "dre": u.arcsec,
    "pa": u.deg,
    "dpa": u.deg,
}
GOOD_FIT_FLAG = 0


def read_vanderwel_catalog(path: str | Path) -> Table:
    """Read a van der Wel GALFIT catalogue into an astropy Table with units.

    Parameters
    ----------
    path : str or Path
        Text catalogue in the van der Wel format.

    Returns
    -------
    astropy.table.Table
        One row per source, the 15 catalogue columns; ``re`` in arcsec
        (semi-major axis), ``mag`` in AB mag, angles in degrees.

    Raises
    ------
    DataError
        If the file is missing, unreadable, or does not have 15 numeric columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"catalogue not found: {path}")
    try:
        values = np.loadtxt(path, comments="#", ndmin=2)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot parse catalogue {path}: {exc}") from None
    if values.shape[1] != len(COLUMNS):
        raise DataError(f"catalogue {path} has {values.shape[1]} columns, expected {len(COLUMNS)}: {' '.join(COLUMNS)}")
    table = Table(values, names=COLUMNS)
    table["NUMBER"] = table["NUMBER"].astype(np.int64)
    table["f"] = table["f"].astype(np.int16)
    for name, unit in UNITS.items():
        table[name].unit = unit
    table.meta["source_file"] = path.name
    return table


def select_good_fits(
    table: Table,
    mag_min: float,
    mag_max: float,
    re_max_arcsec: float,
) -> Table:
    """Rows with a good GALFIT fit (``f == 0``) inside a magnitude and radius range.

    Parameters
    ----------
    table : astropy.table.Table
        Output of :func:`read_vanderwel_catalog`.
    mag_min, mag_max : float
        Inclusive AB magnitude range.
    re_max_arcsec : float
        Largest semi-major half-light radius kept, in arcsec.

    Returns
    -------
    astropy.table.Table
        The selected rows.

    Raises
    ------
    DataError
        If no row passes the selection.
    """
    mag = np.asarray(table["mag"])
    re = np.asarray(table["re"])
    keep = (
        (np.asarray(table["f"]) == GOOD_FIT_FLAG)
        & (mag >= mag_min)
        & (mag <= mag_max)
        & (re > 0)
        & (re <= re_max_arcsec)
        & (np.asarray(table["sn"]) > 0)
    )
    if not keep.any():
        raise DataError(f"no good fit in the catalogue with {mag_min} <= mag <= {mag_max} and re <= {re_max_arcsec} arcsec")
    return table[keep]
