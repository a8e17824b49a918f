"""Whether a labelled test set can be scored (what a promotion gate relies on)."""

from __future__ import annotations

import numpy as np


def evaluation_data_status(stamps, truth) -> str:
    """``passed`` when the test set is usable for scoring, else ``failed: <reason>``.

    Checks what a promotion gate relies on: finite pixels, a (N, H, W) cube with
    a label row per stamp, and labels inside their physical ranges.
    """
    stamps = np.asarray(stamps)
    if stamps.ndim != 3 or len(stamps) != len(truth) or len(stamps) == 0:
        return f"failed: {stamps.shape} stamps for {len(truth)} label rows"
    if not np.all(np.isfinite(stamps)):
        return f"failed: {int(np.sum(~np.isfinite(stamps).all(axis=(1, 2))))} stamps with NaN/inf pixels"
    ranges = {"mag": (0.0, 40.0), "re_arcsec": (0.0, np.inf), "n": (0.2, 8.0), "ellipticity": (0.0, 1.0)}
    for column, (low, high) in ranges.items():
        if column not in truth.colnames:
            return f"failed: no {column!r} label column"
        values = np.asarray(truth[column], dtype=float)
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if bad.any():
            return f"failed: {int(bad.sum())} {column} labels outside [{low}, {high}]"
    return "passed"
