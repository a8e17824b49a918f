"""``legato deblend``: a deblended estimator (:mod:`legato.models.deblending`) with intervals calibrated on blends.

The base estimator is shown the labelled realistic pool B (never test A) with
the neighbours removed; on the stamps the blend detector flags ``BLENDED`` the
factors that make its 68% and 95% intervals hold those shares of the labels
become the folder's ``blended_calibration``. The isolated rows keep the base's
own calibration.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from legato.columns import SERSIC_COLUMNS
from legato.errors import ConfigError
from legato.flags import BLENDED


def build_deblended(
    base: str | Path, out: str | Path, grow_pix: int, calibration: str | Path, max_stamps: int | None = None, min_rows: int = 20
) -> dict:
    """Write the deblended estimator of ``base`` to ``out``, its blended intervals calibrated on ``calibration``.

    Parameters
    ----------
    base : str or Path
        A plain or refined estimator with input checks.
    out : str or Path
        The deblended folder.
    grow_pix : int
        Pixels the neighbours' segments are grown by.
    calibration : str or Path
        A labelled stamp set (``mag, re_arcsec, n, ellipticity`` labels) holding blended stamps: the realistic pool B.
    max_stamps : int, optional
        Use only its first stamps (the toy pipeline).
    min_rows : int
        Fewest blended stamps the calibration accepts; 0 lets a set without any through, uncalibrated (the toy pipeline).

    Returns
    -------
    dict
        The summary: folder, calibration set, rows, factors and timing.

    Raises
    ------
    ConfigError
        When the set lacks a label column or holds too few blended stamps.
    """
    from legato.io.stamp_checks import blend_measurements
    from legato.io.stamps import read_stamp_set
    from legato.models.deblending import blended_interval_factors, deblended_inputs, write_deblended_estimator
    from legato.models.estimator import LoadedEstimator

    start = time.perf_counter()
    stamps, labels, _ = read_stamp_set(calibration)
    missing = [name for name in SERSIC_COLUMNS if name not in labels.colnames]
    if missing:
        raise ConfigError(f"{calibration}: the calibration set has no label column {', '.join(missing)}")
    if max_stamps is not None:
        stamps, labels = stamps[:max_stamps], labels[:max_stamps]
    estimator = LoadedEstimator(base)
    fraction, blended, neighbour_map = blend_measurements(stamps, with_map=True)
    columns = estimator.predict(deblended_inputs(stamps, neighbour_map, int(grow_pix)), checked=True, blend=(fraction, blended))
    rows = ((np.asarray(columns["flags"]) & BLENDED) > 0) & np.all(np.isfinite([columns[c] for c in SERSIC_COLUMNS]), axis=0)
    truth = {name: np.asarray(labels[name], dtype=float)[rows] for name in SERSIC_COLUMNS}
    factors = None
    if rows.any() or min_rows > 0:
        factors = blended_interval_factors(truth, {name: np.asarray(values)[rows] for name, values in columns.items()}, min_rows)
    info = {"calibration": str(calibration), "calibration_blended_rows": int(rows.sum())}
    write_deblended_estimator(base, out, int(grow_pix), factors, info)
    return {
        "out": str(out),
        "base": str(base),
        "grow_pix": int(grow_pix),
        **info,
        "calibration_stamps": len(stamps),
        "blended_calibration": factors,
        "seconds": round(time.perf_counter() - start, 1),
    }
