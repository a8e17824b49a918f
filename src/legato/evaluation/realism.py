"""Does the realistic domain look like real CANDELS data? Noise statistics side by side.

Three measurements, one estimator (:mod:`legato.analysis.noise_texture`):

- **real, residuals**: the GALFIT residual of every real UDS F160W block (the
  galaxy and its fitted neighbours removed: the cleanest view of the noise);
- **real, stamps**: the sky pixels (outside every photutils source segment) of
  the ingested real stamps;
- **realistic**: the sky pixels of the realistic stamps, measured the same way.

The realistic-versus-real agreement is checked by the Great Expectations suite
``expectations/noise_realism.json``: the median per-pixel sigma and the median
correlations at 1 and 2 pixels of the realistic stamps within ``tolerance`` of
the real residuals' medians, and no realistic stamp with negative holes.

Units: noise in electrons/s per pixel; lags in pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from legato.analysis.noise_texture import HOLE_FRACTION_LIMIT, negative_hole_fraction, noise_statistics
from legato.analysis.segmentation import segment_stamp
from legato.errors import DataError

NOISE_COLUMNS = ("noise_sigma", "noise_correlation_1pix", "noise_correlation_2pix")
REALISM_SUITE = "expectations/noise_realism.json"


def _row(stats, **extra) -> dict:
    return {
        "noise_sigma": stats.sigma,
        "noise_correlation_1pix": stats.correlation.get(1, np.nan),
        "noise_correlation_2pix": stats.correlation.get(2, np.nan),
        "n_pixels": stats.n_pixels,
        **extra,
    }


def residual_noise_table(block_paths) -> pd.DataFrame:
    """Noise statistics of the GALFIT residual of each real block.

    Parameters
    ----------
    block_paths : iterable of path
        GALFIT output blocks (image, model, residual HDUs).

    Returns
    -------
    pandas.DataFrame
        One row per block: ``block``, ``noise_sigma`` (electrons/s), ``noise_correlation_1pix``,
        ``noise_correlation_2pix``, ``n_pixels``.

    Raises
    ------
    DataError
        If a block has no residual or no block is given.
    """
    from legato.io.galfit import read_galfit_block

    rows = []
    for path in block_paths:
        block = read_galfit_block(path)
        if block.residual is None:
            raise DataError(f"{Path(path).name}: a GALFIT block without a residual HDU cannot give noise statistics")
        no_data = block.image == 0.0  # exact zeros: beyond the observed area (many UDS blocks are cut by such a band)
        rows.append(
            _row(noise_statistics(block.residual, no_data), block=Path(path).name, no_data_fraction=round(float(no_data.mean()), 4))
        )
    if not rows:
        raise DataError("no GALFIT block to measure the real noise on")
    return pd.DataFrame(rows)


def stamp_noise_table(stamps: np.ndarray, sky_sigma=None) -> pd.DataFrame:
    """Noise statistics of the sky pixels of each stamp (every detected source masked).

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(N, H, W)`` background-subtracted stamps, electrons/s.
    sky_sigma : array-like, optional
        Per-stamp noise given to the detection (default: measured on each border).

    Returns
    -------
    pandas.DataFrame
        One row per stamp: the :data:`NOISE_COLUMNS`, ``n_pixels`` and
        ``negative_hole_fraction`` (pixels below -4 sigma, the stamp's own measured sigma).
    """
    rows = []
    for k, stamp in enumerate(np.asarray(stamps)):
        given = None if sky_sigma is None else float(np.asarray(sky_sigma)[k])
        sources = segment_stamp(stamp, given).source_mask
        stats = noise_statistics(stamp, sources)
        rows.append(_row(stats, negative_hole_fraction=negative_hole_fraction(stamp, stats.sigma)))
    return pd.DataFrame(rows)


def medians(table: pd.DataFrame) -> dict:
    """Median of each noise column (NaN-safe), rounded for the report."""
    return {name: round(float(np.nanmedian(table[name])), 6) for name in NOISE_COLUMNS}


def realism_parameters(real: dict, tolerance: float, min_stamps: int = 100) -> dict:
    """The suite's ``$PARAMETER`` values: each real median, ``tolerance`` either side, and the fewest stamps compared."""
    out = {"min_stamps": int(min_stamps)}
    for name in NOISE_COLUMNS:
        out[f"{name}_min"] = real[name] * (1.0 - tolerance)
        out[f"{name}_max"] = real[name] * (1.0 + tolerance)
    out["hole_fraction_max"] = HOLE_FRACTION_LIMIT
    return out


def realism_report(
    block_paths,
    realistic_dir: str | Path,
    real_stamps_dir: str | Path | None,
    suite_path: str | Path = REALISM_SUITE,
    tolerance: float = 0.2,
    max_stamps: int = 1000,
    min_stamps: int = 100,
) -> dict:
    """Compare the noise of the realistic stamps with the real UDS data and validate it with Great Expectations.

    Parameters
    ----------
    block_paths : iterable of path
        Real GALFIT blocks (the reference: their residuals).
    realistic_dir : str or Path
        Raw realistic domain (sub-folders ``A`` and ``B``); every stamp is checked for
        negative holes, the first ``max_stamps`` of each split are measured.
    real_stamps_dir : str or Path, optional
        Ingested real stamps, measured like the realistic ones (for a like-for-like view).
    suite_path : str or Path
        The ``noise_realism`` expectation suite.
    tolerance : float
        Relative agreement required of each median.
    max_stamps : int
        Realistic stamps measured per split.
    min_stamps : int
        Fewest realistic stamps the comparison accepts.

    Returns
    -------
    dict
        Per-block real statistics, medians of each sample, their ratios, the hole counts
        and the suite's outcome (``success`` and each expectation).
    """
    from legato.io.stamps import read_stamp_set
    from legato.validation.gx import Validator, load_suite

    residuals = residual_noise_table(block_paths)
    real = medians(residuals)
    realistic_tables, holes = [], {}
    for split in ("A", "B"):
        folder = Path(realistic_dir) / split
        if not folder.is_dir():
            continue
        stamps, labels, _ = read_stamp_set(folder)
        sigma = np.asarray(labels["sky_sigma"], dtype=float) if "sky_sigma" in labels.colnames else None
        measured = sigma if sigma is not None else np.array([noise_statistics(s).sigma for s in stamps])
        holes[split] = {
            "stamps": int(len(stamps)),
            "with_negative_holes": int(sum(negative_hole_fraction(s, v) > HOLE_FRACTION_LIMIT for s, v in zip(stamps, measured))),
        }
        table = stamp_noise_table(stamps[:max_stamps], None if sigma is None else sigma[:max_stamps])
        table["split"] = split
        realistic_tables.append(table)
    if not realistic_tables:
        raise DataError(f"no realistic split (A or B) under {realistic_dir}")
    realistic = pd.concat(realistic_tables, ignore_index=True)
    simulated = medians(realistic)
    report = {
        "tolerance": tolerance,
        "real_residuals": {"blocks": int(len(residuals)), "median": real, "per_block": residuals.round(6).to_dict(orient="records")},
        "realistic": {"stamps_measured": int(len(realistic)), "median": simulated, "negative_holes": holes},
        "ratio_realistic_to_real": {name: round(simulated[name] / real[name], 4) for name in NOISE_COLUMNS},
    }
    if real_stamps_dir is not None and Path(real_stamps_dir).is_dir():
        stamps, _, _ = read_stamp_set(real_stamps_dir)
        table = stamp_noise_table(stamps)
        report["real_stamps"] = {
            "stamps": int(len(table)),
            "median": medians(table),
            "with_negative_holes": int(np.sum(table["negative_hole_fraction"] > HOLE_FRACTION_LIMIT)),
        }
    outcome = Validator().run(realistic, load_suite(suite_path), realism_parameters(real, tolerance, min_stamps))
    report["suite"] = {
        "name": outcome.suite,
        "success": outcome.success,
        "expectations": [
            {"type": e.type, "column": e.column, "success": e.success, "observed": e.observed, "expected": e.expected}
            for e in outcome.expectations
        ],
    }
    report["targets"] = {
        "noise_statistics_within_tolerance": all(abs(r - 1.0) <= tolerance for r in report["ratio_realistic_to_real"].values()),
        "no_negative_holes": all(h["with_negative_holes"] == 0 for h in holes.values()),
    }
    return report
