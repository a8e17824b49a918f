"""Training the photometric second stage of an estimator (``legato refine``; :mod:`legato.models.refinement`).

The base estimator measures simulated stamps whose truth is known (the training
split); the stage learns the residuals from the base's estimates and the stamps'
curve of growth and moments, and its intervals are calibrated on the validation
split. Both splits are simulated isolated galaxies at the calibrated depth; the
base's own training never saw them (it learnt from the noiseless library with
noise drawn on the fly).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from legato.columns import SERSIC_COLUMNS
from legato.stats import r2_score

#: Table 1's paper-comparable subset
MAG_LIMIT = 23.0


def _rows(estimator, set_dir: Path, limit: int | None, batch_size: int):
    from legato.io.stamps import load_split

    stamps, labels, _ = load_split(set_dir, limit)
    columns = estimator.predict(stamps, batch_size=batch_size, checked=True)
    return stamps, labels, {k: np.asarray(v, dtype=np.int64 if k == "flags" else np.float64) for k, v in columns.items()}


def _r2(labels, columns: dict) -> dict:
    bright = np.asarray(labels["mag"], dtype=float) <= MAG_LIMIT
    return {p: round(r2_score(np.asarray(labels[p], dtype=float)[bright], np.asarray(columns[p])[bright]), 5) for p in SERSIC_COLUMNS}


def train_refinement(
    base: Path, train: Path, calibration: Path, out: Path, seed: int = 0, max_train: int | None = None, batch_size: int = 256
) -> dict:
    """Fit, calibrate and write a refined estimator; return the run summary.

    Parameters
    ----------
    base : Path
        The base estimator folder (a plain estimator with uncertainties).
    train, calibration : Path
        Simulated stamp sets with their true parameters: the stage's training rows and its interval calibration.
    out : Path
        The refined estimator folder (``base/`` and ``refinement/``), written whole or not at all.
    seed : int
        Seed of the stage's initialisation and batches.
    max_train : int, optional
        Use only the first stamps of ``train``.
    batch_size : int
        Stamps per forward pass of the base.

    Returns
    -------
    dict
        Rows, seconds, and the validation R² (H <= 23) before and after the stage, with interval coverage.
    """
    from legato.conventions import BAND, ZEROPOINT_AB
    from legato.models.estimator import LoadedEstimator
    from legato.models.refinement import RefinementStage, stage_features, stage_residuals, write_refined_estimator
    from legato.models.uncertainty import covered

    zeropoint = ZEROPOINT_AB[BAND]
    start = time.perf_counter()
    estimator = LoadedEstimator(base)
    if estimator.psf_bands is not None:
        from legato.errors import ConfigError

        raise ConfigError(f"{base}: refining a PSF-conditioned estimator needs per-band training sets (not built yet)")
    stamps, labels, columns = _rows(estimator, train, max_train, batch_size)
    features, residuals = stage_features(stamps, columns, zeropoint), stage_residuals(labels, columns)
    del stamps
    stage = RefinementStage.fit(features, residuals, seed=seed)
    fit_seconds = time.perf_counter() - start

    stamps, val_labels, val_columns = _rows(estimator, calibration, None, batch_size)
    val_features = stage_features(stamps, val_columns, zeropoint)
    val_residuals = stage_residuals(val_labels, val_columns)
    mean, _ = stage.residuals(val_features)
    stage.calibrate(val_features, val_residuals, val_columns["mag"] + np.nan_to_num(mean[:, 0]))
    refined = stage.apply(stamps, val_columns, zeropoint)
    info = {"train": str(train), "calibration": str(calibration), "seed": seed, "train_rows": int(len(features))}
    write_refined_estimator(base, stage, out, info)
    coverage = {}
    for p in SERSIC_COLUMNS:
        truth = np.asarray(val_labels[p], dtype=float)
        coverage[p] = {
            level: round(float(np.mean(covered(truth, refined[p], refined[f"{p}{suffix}"]))), 3)
            for level, suffix in (("68", "_err"), ("95", "_err95"))
        }
    return {
        "base": str(base),
        "out": str(out),
        "train_rows": int(len(features)),
        "calibration_rows": int(len(val_labels)),
        "seconds": round(time.perf_counter() - start, 1),
        "fit_seconds": round(fit_seconds, 1),
        "val_r2_h23": {"base": _r2(val_labels, val_columns), "refined": _r2(val_labels, refined)},
        "val_coverage_refined": coverage,
    }
