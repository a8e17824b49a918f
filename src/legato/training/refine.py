"""Training the photometric second stage of an estimator (``legato refine``; :mod:`legato.models.refinement`).

The stage learns from the noiseless library (``datasets/noiseless``): every galaxy
of its training split is made noisy ``copies`` times at survey depths drawn like the
production estimator's own training batches (sky sigma 0.2-2.5x the calibrated one,
white or correlated noise, a random flip or rotation), so that the stage sees the
noise the base was trained for, not one depth. The base measures these stamps; the
stage learns the residuals from its estimates and the stamps' curve of growth and
moments. Its intervals are calibrated on the validation split made noisy the same
way (``calibration_copies`` depths per galaxy), galaxies neither the base nor the
stage trained on.

A PSF-conditioned base (the scene estimator) is refined on the multi-band noiseless
library (``datasets/bands``): each band's rows are measured with their own true
(jittered) PSF and zeropoint, as the base was trained, and the stage sees the PSF
FWHM among its inputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from legato.columns import ERROR_SUFFIXES, SERSIC_COLUMNS
from legato.stats import r2_score

#: Table 1's paper-comparable subset
MAG_LIMIT = 23.0


def noisy_rows(set_dir: Path, copies: int, depths, seed: int, limit: int | None = None, bright: tuple[float, int] | None = None):
    """``copies`` noisy realisations of every noiseless model of ``set_dir`` (random depth, correlation and symmetry each).

    ``bright = (mag, count)`` gives every galaxy brighter than ``mag`` ``count`` realisations in all instead
    (the extra rows after the others): bright galaxies are rare in the survey prior, yet their
    errors are the furthest from the physical limit (``reports/crb.json``).

    Returns
    -------
    tuple
        Stamps ``(N * copies + extra, H, W)`` float32, electrons/s, and their label rows.
    """
    from legato.io.stamps import load_split
    from legato.symmetry import dihedral
    from legato.training.noise_aware import noiseless_set_noise
    from legato.training.noisy_batches import noisy_copies

    models, labels, header = load_split(set_dir, limit)
    noise = noiseless_set_noise(header, set_dir)
    rows = np.arange(len(models) * copies) % len(models)
    if bright is not None and bright[1] > copies:
        brighter = np.flatnonzero(np.asarray(labels["mag"], dtype=float) < bright[0])
        rows = np.concatenate([rows, np.repeat(brighter, int(bright[1]) - copies)])
    rng = np.random.default_rng([seed, copies])
    scale, correlation = depths.draw(len(rows), rng)
    stamps = noisy_copies(dihedral(models[rows], rng.integers(0, 8, len(rows))), noise, scale, correlation, seed=seed + 1)
    return stamps, labels[rows]


def estimator_rows(estimator, stamps: np.ndarray, batch_size: int = 256, psf=None) -> dict:
    """An estimator's columns on already checked ``stamps`` (with ``psf``, a :class:`~legato.models.psf_condition.PsfCondition`,
    for a PSF-conditioned one): flags as int64, every other column float64."""
    columns = estimator.predict(stamps, batch_size=batch_size, checked=True, psf=psf)
    return {k: np.asarray(v, dtype=np.int64 if k == "flags" else np.float64) for k, v in columns.items()}


#: label columns a PSF-conditioned base is measured with (the multi-band noiseless library's)
PSF_LABELS = ("band", "psf_fwhm_arcsec", "psf_r50_arcsec", "zeropoint")


def base_rows(estimator, stamps: np.ndarray, labels, batch_size: int = 256) -> tuple[dict, np.ndarray]:
    """The base estimator's columns on ``stamps`` and each row's AB zeropoint.

    A PSF-conditioned base measures each band's rows told their true PSF (``psf_fwhm_arcsec``,
    ``psf_r50_arcsec``) and the band's zeropoint, as it was trained; any other base measures
    every row on the F160W zeropoint.

    Raises
    ------
    ConfigError
        When a PSF-conditioned base is given labels without the multi-band columns.
    """
    from legato.conventions import BAND, ZEROPOINT_AB

    if estimator.psf_bands is None:
        return estimator_rows(estimator, stamps, batch_size), np.full(len(stamps), ZEROPOINT_AB[BAND])
    missing = [c for c in PSF_LABELS if c not in labels.colnames]
    if missing:
        from legato.errors import ConfigError

        raise ConfigError(
            f"a PSF-conditioned estimator is refined on a multi-band noiseless set (legato simulate --noiseless --bands): "
            f"the labels lack {', '.join(missing)}"
        )
    from legato.models.psf_condition import PsfCondition

    bands = np.asarray(labels["band"]).astype(str)
    merged: dict[str, np.ndarray] = {}
    for band in np.unique(bands):
        rows = np.flatnonzero(bands == band)
        condition = PsfCondition(
            band=str(band),
            psf_id="true PSF of each row",
            fwhm_arcsec=np.asarray(labels["psf_fwhm_arcsec"][rows], dtype=float),
            r50_arcsec=np.asarray(labels["psf_r50_arcsec"][rows], dtype=float),
            zeropoint=float(labels["zeropoint"][rows[0]]),
        )
        part = estimator_rows(estimator, stamps[rows], batch_size, psf=condition)
        for name, values in part.items():
            merged.setdefault(name, np.empty(len(stamps), dtype=values.dtype))[rows] = values
    return merged, merged["zeropoint"]


def _r2(labels, columns: dict) -> dict:
    bright = np.asarray(labels["mag"], dtype=float) <= MAG_LIMIT
    return {p: round(r2_score(np.asarray(labels[p], dtype=float)[bright], np.asarray(columns[p])[bright]), 5) for p in SERSIC_COLUMNS}


def train_refinement(
    base: Path,
    train: Path,
    calibration: Path,
    out: Path,
    depths=None,
    copies: int = 2,
    calibration_copies: int = 3,
    seed: int = 0,
    max_train: int | None = None,
    batch_size: int = 256,
    max_shift_sigmas: float | None = None,
    bright: tuple[float, int] | None = None,
) -> dict:
    """Fit, calibrate and write a refined estimator; return the run summary.

    Parameters
    ----------
    base : Path
        The base estimator folder (a plain estimator with uncertainties).
    train, calibration : Path
        Noiseless sets with their true parameters (``legato simulate --noiseless``): the stage's training rows and its
        interval calibration, each made noisy at drawn depths.
    out : Path
        The refined estimator folder (``base/`` and ``refinement/``), written whole or not at all.
    depths : DepthRange, optional
        Survey depths drawn for the noisy copies (default: the production estimator's training range).
    copies, calibration_copies : int
        Noisy realisations per training and per calibration galaxy.
    seed : int
        Seed of the noise and of the stage's initialisation and batches.
    max_train : int, optional
        Use only the first galaxies of ``train``.
    batch_size : int
        Stamps per forward pass of the base.
    max_shift_sigmas : float, optional
        The stage's shift guard in the base's 68% half-widths (None: none; :meth:`RefinementStage.guarded`).
    bright : tuple, optional
        ``(mag, count)``: training galaxies brighter than ``mag`` get ``count`` noisy copies (:func:`noisy_rows`).

    Returns
    -------
    dict
        Rows, seconds, and the validation R² (H <= 23) before and after the stage, with interval coverage.
    """
    from legato.models.estimator import LoadedEstimator
    from legato.models.refinement import RefinementStage, stage_features, stage_residuals, write_refined_estimator
    from legato.models.uncertainty import covered
    from legato.training.noisy_batches import DepthRange

    start = time.perf_counter()
    estimator = LoadedEstimator(base)
    depths = DepthRange() if depths is None else depths
    stamps, labels = noisy_rows(train, copies, depths, seed, max_train, bright)
    columns, zeropoint = base_rows(estimator, stamps, labels, batch_size)
    features, residuals = stage_features(stamps, columns, zeropoint), stage_residuals(labels, columns)
    del stamps
    stage = RefinementStage.fit(features, residuals, seed=seed, max_shift_sigmas=max_shift_sigmas)
    fit_seconds = time.perf_counter() - start

    stamps, val_labels = noisy_rows(calibration, calibration_copies, depths, seed + 100)
    val_columns, val_zeropoint = base_rows(estimator, stamps, val_labels, batch_size)
    val_features = stage_features(stamps, val_columns, val_zeropoint)
    val_residuals = stage_residuals(val_labels, val_columns)
    mean, _ = stage.residuals(val_features)
    guarded = stage.guarded(val_features, mean)
    stage.calibrate(val_features, val_residuals, val_columns["mag"] + np.nan_to_num(mean[:, 0]))
    refined = stage.apply(stamps, val_columns, val_zeropoint)
    from legato.tracking import training_domain

    info = {
        "base_domain": training_domain(estimator.manifest.get("training", {}).get("recipe", {})),
        "train": str(train),
        "calibration": str(calibration),
        "copies": copies,
        "calibration_copies": calibration_copies,
        "depths": {"sky_scale": list(depths.sky_scale), "correlation_pix": list(depths.correlation_pix)},
        "seed": seed,
        "train_rows": int(len(features)),
        "max_shift_sigmas": max_shift_sigmas,
        **({"bright": {"mag": bright[0], "copies": bright[1]}} if bright is not None else {}),
    }
    write_refined_estimator(base, stage, out, info)
    coverage = {}
    for p in SERSIC_COLUMNS:
        truth = np.asarray(val_labels[p], dtype=float)
        coverage[p] = {
            level: round(float(np.mean(covered(truth, refined[p], refined[f"{p}{suffix}"]))), 3) for level, suffix in ERROR_SUFFIXES.items()
        }
    return {
        "base": str(base),
        "out": str(out),
        "train_rows": int(len(features)),
        "calibration_rows": int(len(val_labels)),
        "calibration_rows_beyond_guard": int(np.sum(~guarded & np.all(np.isfinite(mean), axis=1))),
        "seconds": round(time.perf_counter() - start, 1),
        "fit_seconds": round(fit_seconds, 1),
        "val_r2_h23": {"base": _r2(val_labels, val_columns), "refined": _r2(val_labels, refined)},
        "val_coverage_refined": coverage,
    }
