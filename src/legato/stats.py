"""Robust statistics and accuracy metrics in the paper's (Table 1, Figure 3) and the Euclid Morphology Challenge's terms.

Errors are *input - output* (true - estimated), as in the paper's Figure 3:
in magnitudes for ``mag``, relative (``(true - est) / true``) for ``re`` and
``n``, absolute for ``ellipticity``.
"""

from __future__ import annotations

import numpy as np
from astropy.stats import median_absolute_deviation

from legato.columns import COLUMN, PARAMETERS, RELATIVE

#: |error| above which an estimate is an outlier (mag, relative re, relative n, ellipticity)
OUTLIER_THRESHOLD = {"mag": 0.25, "re": 0.25, "n": 0.5, "ellipticity": 0.1}
#: MAD to Gaussian sigma, to the four digits every published figure was computed with
#: (astropy's ``mad_std`` uses 1.482602..., which would move the last bits of the stamp sets)
MAD_TO_SIGMA = 1.4826


def r2_score(true, estimate) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (NaN estimates excluded)."""
    true = np.asarray(true, dtype=float)
    estimate = np.asarray(estimate, dtype=float)
    ok = np.isfinite(true) & np.isfinite(estimate)
    true, estimate = true[ok], estimate[ok]
    total = np.sum((true - true.mean()) ** 2)
    return float(1.0 - np.sum((true - estimate) ** 2) / total) if total > 0 else float("nan")


def errors(parameter: str, true, estimate) -> np.ndarray:
    """Input - output error of one parameter (relative for re and n)."""
    true = np.asarray(true, dtype=float)
    estimate = np.asarray(estimate, dtype=float)
    diff = true - estimate
    return diff / true if parameter in RELATIVE else diff


def robust_sigma(values) -> float:
    """Normalised median absolute deviation (1.4826 MAD, astropy's) of the finite ``values``, a scatter robust to outliers."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * median_absolute_deviation(values))


def estimated_parameters(estimates) -> list[str]:
    """The parameters (of ``PARAMETERS``) that a table or mapping of estimates holds."""
    names = getattr(estimates, "colnames", estimates)
    return [p for p in PARAMETERS if COLUMN[p] in names]


def r2_table(truth, estimates) -> dict[str, float]:
    """R² of each estimated parameter (Table 1 row) for table-like ``truth`` and ``estimates``."""
    return {p: r2_score(truth[COLUMN[p]], estimates[COLUMN[p]]) for p in estimated_parameters(estimates)}


def binned_statistics(truth, estimates, edges) -> dict[str, list[dict]]:
    """Per magnitude bin and parameter: count, bias (median error), scatter (NMAD), outlier fraction.

    Parameters
    ----------
    truth, estimates : table-like
        Columns ``mag, re_arcsec, n, ellipticity``; bins use the TRUE magnitude.
    edges : sequence of float
        Magnitude bin edges.

    Returns
    -------
    dict
        ``{parameter: [{"mag_lo", "mag_hi", "count", "bias", "scatter", "outlier_fraction"}, ...]}``.
    """
    mag = np.asarray(truth["mag"], dtype=float)
    result = {}
    for p in estimated_parameters(estimates):
        err = errors(p, truth[COLUMN[p]], estimates[COLUMN[p]])
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            e = err[(mag >= lo) & (mag < hi)]
            e = e[np.isfinite(e)]
            rows.append(
                {
                    "mag_lo": float(lo),
                    "mag_hi": float(hi),
                    "count": int(e.size),
                    "bias": float(np.median(e)) if e.size else None,
                    "scatter": robust_sigma(e) if e.size else None,
                    "outlier_fraction": float(np.mean(np.abs(e) > OUTLIER_THRESHOLD[p])) if e.size else None,
                }
            )
        result[p] = rows
    return result
