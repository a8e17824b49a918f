"""Network-started classical fits: a network's estimates of a stamp set, by id, as starting points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from legato.columns import SERSIC_COLUMNS
from legato.errors import DataError


def start_estimates(catalogue: str | Path) -> dict[int, np.ndarray]:
    """Network estimates to start fits from, by id: ``(mag, re_arcsec, n, ellipticity)`` (NaN rows start from moments).

    Raises
    ------
    DataError
        If the catalogue cannot be read or lacks ``id`` or an estimate column.
    """
    try:
        table = Table.read(catalogue)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read the start catalogue {catalogue}: {exc}") from None
    missing = [c for c in ("id", *SERSIC_COLUMNS) if c not in table.colnames]
    if missing:
        raise DataError(f"start catalogue {catalogue} lacks the column(s) {', '.join(missing)}")
    values = np.stack([np.ma.filled(np.asarray(table[c], dtype=float), np.nan) for c in SERSIC_COLUMNS], axis=1)
    return {int(i): v for i, v in zip(table["id"], values)}


def network_starts(source: str | Path, set_dir: str | Path) -> dict[int, np.ndarray]:
    """Starting estimates for every stamp of ``set_dir``: from an estimator folder (run here) or a catalogue.

    Parameters
    ----------
    source : str or Path
        An estimator folder (e.g. ``models/production_tracked``: it predicts the set
        now, a few seconds per 5,000 stamps) or a catalogue with ``id`` and the estimates.
    set_dir : str or Path
        The stamp set to be fitted (its labels' ``id`` column keys the result).

    Returns
    -------
    dict of int to numpy.ndarray
        ``id -> (mag, re_arcsec, n, ellipticity)``.
    """
    source = Path(source)
    if not source.is_dir():
        return start_estimates(source)
    from legato.io.stamps import read_stamp_set
    from legato.models.estimator import LoadedEstimator

    stamps, labels, _ = read_stamp_set(set_dir)
    values = LoadedEstimator(source).predict(stamps)
    stacked = np.stack([np.asarray(values[c], dtype=float) for c in SERSIC_COLUMNS], axis=1)
    return {int(i): v for i, v in zip(labels["id"], stacked)}
