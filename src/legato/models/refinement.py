"""A photometric second stage: the network's estimates refined with the stamp's curve of growth and moments.

A regression network resolves a few per cent of a target's range whatever the
signal-to-noise: the production network's magnitude error has a floor of about
0.03 mag from H = 19 to 23, 4-10x the Cramér-Rao bound of bright galaxies
(``reports/crb.json``), although their photometry is nearly noiseless. Sums of
pixels are exact. The refinement stage is a small dense network that takes

- the base estimator's estimates (mag, ln re, ln n, ellipticity), their 68%
  intervals and its measured sky noise (and the PSF FWHM when the base reports it),
- the stamp's curve of growth: fluxes in circular apertures of 2-23 pixels around
  the stamp's centre, relative to the flux of the estimated magnitude, with their
  white-noise errors on the same scale,
- second moments inside apertures of 4, 8 and 16 pixels (moment ellipticity and
  size),

and predicts the residuals ``truth - estimate`` of mag, ln re, ln n and ellipticity
with a Gaussian variance each (mean-squared error for the means, the likelihood for
the variances with the means' gradient stopped, as the production network's head).
Its intervals are calibrated on held-out stamps per predicted-magnitude bin
(:func:`legato.models.uncertainty.binned_calibration_scales`).

A refined estimator folder (manifest ``kind: refined``) holds the base estimator
under ``base/`` and the stage under ``refinement/``. Stamps the base flags as
``BLENDED`` (a neighbour's light is in the apertures: the stage is trained on
isolated galaxies) or cannot measure keep the base's values and intervals. A stage
trained with a shift guard (``max_shift_sigmas``) also keeps the base's row where it
would move any estimate by more than that many of the base's own 68% half-widths:
a dense network extrapolates without bound on a curve of growth unlike any it was
trained on (an undetected neighbour, a clumpy galaxy), and a calibrated base is
rarely that far from the truth (3 half-widths: 0.3% of Gaussian errors).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from legato.columns import ERROR_SUFFIXES, SERSIC_COLUMNS
from legato.errors import ConfigError
from legato.flags import BLENDED, NOT_PREDICTED

#: the manifest ``kind`` of a refined estimator folder
REFINED_KIND = "refined"
#: aperture radii of the curve of growth, pixels
GROWTH_RADII_PIX = (2.0, 3.0, 4.5, 6.5, 9.0, 12.5, 17.0, 23.0)
#: aperture radii of the second moments, pixels
MOMENT_RADII_PIX = (4.0, 8.0, 16.0)
#: estimate column -> residual in the stage's target space (log for re and n)
LOG_TARGETS = {"mag": False, "re_arcsec": True, "n": True, "ellipticity": False}
#: predicted-magnitude edges of the interval calibration
CALIBRATION_MAG_EDGES = (20.0, 21.0, 22.0, 23.0, 24.0)
#: clip of the log-variances (standardised residuals)
LOG_VARIANCE_RANGE = (-12.0, 6.0)
PSF_FWHM_REFERENCE_ARCSEC = 0.18
#: fewest usable rows the stage is trained on (the toy pipeline has 30)
MIN_TRAINING_ROWS = 20
#: columns of :func:`stage_features` holding the base's 68% half-widths in the stage's target space
BASE_WIDTH_FEATURES = slice(4, 8)


@lru_cache(maxsize=4)
def _aperture_weights(size: int) -> np.ndarray:
    """``(size², 20)`` float32 pixel weights of every aperture sum: the growth apertures' fluxes, then the moment
    apertures' fluxes and their ``x²``, ``y²`` and ``xy`` moments (offsets from the stamp's centre), so that one
    matrix product of the flattened stamps gives them all."""
    y, x = np.indices((size, size), dtype=np.float64) - size // 2
    x, y = x.ravel(), y.ravel()
    r = np.hypot(x, y)
    growth = np.stack([(r <= radius) for radius in GROWTH_RADII_PIX]).astype(np.float64)
    moments = np.stack([(r <= radius) for radius in MOMENT_RADII_PIX]).astype(np.float64)
    return np.concatenate([growth, moments, moments * x * x, moments * y * y, moments * x * y]).T.astype(np.float32)


def stage_features(stamps: np.ndarray, columns: dict, zeropoint: float) -> np.ndarray:
    """The refinement stage's inputs, ``(N, F)`` float64 (NaN where an estimate is missing).

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(N, H, W)`` stamps, electrons/s.
    columns : dict
        The base estimator's rows on them: ``mag``, ``re_arcsec``, ``n``, ``ellipticity``, their ``_err`` and
        ``sky_sigma`` (``psf_fwhm_arcsec`` when it reports the PSF).
    zeropoint : float or numpy.ndarray
        AB zeropoint of ``mag`` (electrons/s), one or ``(N,)`` (rows of several bands).
    """
    weights = _aperture_weights(stamps.shape[-1])
    sums = (stamps.reshape(len(stamps), -1).astype(np.float32, copy=False) @ weights).astype(np.float64)
    g, m = len(GROWTH_RADII_PIX), len(MOMENT_RADII_PIX)
    growth_flux, flux_m = sums[:, :g], sums[:, g : g + m]
    xx, yy, xy = (sums[:, g + (k + 1) * m : g + (k + 2) * m] for k in range(3))
    growth_pixels = weights[:, :g].sum(axis=0, dtype=np.float64)
    mag = np.asarray(columns["mag"], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        total = 10.0 ** (-0.4 * (mag - zeropoint))
        sky = np.asarray(columns["sky_sigma"], dtype=np.float64)
        curve = growth_flux / total[:, None]
        noise = sky[:, None] * np.sqrt(growth_pixels)[None, :] / total[:, None]
        trace = xx + yy
        e_moment = np.hypot(xx - yy, 2.0 * xy) / np.where(trace > 0, trace, np.nan)
        size = np.sqrt(np.where((trace > 0) & (flux_m > 0), trace / np.where(flux_m > 0, flux_m, 1.0), np.nan))
        fwhm = np.asarray(columns.get("psf_fwhm_arcsec", np.full(len(mag), PSF_FWHM_REFERENCE_ARCSEC)), dtype=np.float64)
        estimates = [
            mag - zeropoint,
            np.log(columns["re_arcsec"]),
            np.log(columns["n"]),
            columns["ellipticity"],
            columns["mag_err"],
            np.asarray(columns["re_arcsec_err"]) / np.asarray(columns["re_arcsec"]),
            np.asarray(columns["n_err"]) / np.asarray(columns["n"]),
            columns["ellipticity_err"],
            np.log(sky),
            np.log(fwhm / PSF_FWHM_REFERENCE_ARCSEC),
        ]
    out = np.column_stack([np.column_stack(estimates), curve, noise, np.clip(e_moment, 0, 1), np.log(size)]).astype(np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def stage_residuals(truth, columns: dict) -> np.ndarray:
    """``(N, 4)`` residuals ``truth - estimate`` in the stage's target space (ln for re and n)."""
    out = []
    for name, log in LOG_TARGETS.items():
        t, e = np.asarray(truth[name], dtype=np.float64), np.asarray(columns[name], dtype=np.float64)
        out.append(np.log(t) - np.log(e) if log else t - e)
    return np.column_stack(out)


def _loss(y_true, y_pred):
    """MSE of the means plus the Gaussian likelihood of the log-variances (means' gradient stopped)."""
    from keras import ops

    k = y_true.shape[-1]
    mean, log_variance = y_pred[:, :k], ops.clip(y_pred[:, k:], *LOG_VARIANCE_RANGE)
    squared = ops.square(y_true - mean)
    return ops.mean(squared, axis=-1) + ops.mean(0.5 * (log_variance + ops.stop_gradient(squared) * ops.exp(-log_variance)), axis=-1)


class RefinementStage:
    """The second stage: a dense network on :func:`stage_features`, its standardisation and interval calibration."""

    def __init__(self, model, feature_mean, feature_std, residual_std, calibration: dict | None = None, max_shift_sigmas=None):
        self.model = model
        self.max_shift_sigmas = None if max_shift_sigmas is None else float(max_shift_sigmas)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float64)
        self.feature_std = np.asarray(feature_std, dtype=np.float64)
        self.residual_std = np.asarray(residual_std, dtype=np.float64)
        self.calibration = calibration
        self._forward = None

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        residuals: np.ndarray,
        seed: int = 0,
        epochs: int = 150,
        width: int = 128,
        depth: int = 3,
        max_shift_sigmas: float | None = None,
    ):
        """Train the stage on ``features`` / ``residuals`` (rows with any NaN are left out; 10% held out for early stopping).

        ``max_shift_sigmas`` (None: no guard) is the largest shift of an estimate, in the base's 68% half-widths,
        the stage may apply (:meth:`guarded`)."""
        import keras

        keras.utils.set_random_seed(seed)
        ok = np.all(np.isfinite(features), axis=1) & np.all(np.isfinite(residuals), axis=1)
        if ok.sum() < MIN_TRAINING_ROWS:
            raise ConfigError(f"the refinement stage needs at least {MIN_TRAINING_ROWS} usable training rows, got {int(ok.sum())}")
        mean, std = features[ok].mean(axis=0), features[ok].std(axis=0)
        std[std == 0] = 1.0
        residual_std = residuals[ok].std(axis=0)
        residual_std[residual_std == 0] = 1.0
        layers = [keras.Input((features.shape[1],))] + [keras.layers.Dense(width, activation="gelu") for _ in range(depth)]
        model = keras.Sequential(layers + [keras.layers.Dense(2 * residuals.shape[1])])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss)
        callbacks = [keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True), keras.callbacks.ReduceLROnPlateau(patience=4)]
        x = ((features[ok] - mean) / std).astype(np.float32)
        model.fit(
            x,
            (residuals[ok] / residual_std).astype(np.float32),
            validation_split=0.1,
            epochs=epochs,
            batch_size=256,
            verbose=0,
            callbacks=callbacks,
        )
        return cls(model, mean, std, residual_std, max_shift_sigmas=max_shift_sigmas)

    def residuals(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted residuals and their standard deviations, ``(N, 4)`` each (NaN where a feature is missing)."""
        import tensorflow as tf

        if self._forward is None:
            self._forward = tf.function(lambda batch: self.model(batch, training=False), reduce_retracing=True)
        k = len(self.residual_std)
        mean, sigma = np.full((len(features), k), np.nan), np.full((len(features), k), np.nan)
        ok = np.all(np.isfinite(features), axis=1)
        if ok.any():
            out = self._forward(((features[ok] - self.feature_mean) / self.feature_std).astype(np.float32)).numpy().astype(np.float64)
            mean[ok] = out[:, :k] * self.residual_std
            sigma[ok] = np.exp(0.5 * np.clip(out[:, k:], *LOG_VARIANCE_RANGE)) * self.residual_std
        return mean, sigma

    def guarded(self, features: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Rows whose every shift is within ``max_shift_sigmas`` of the base's 68% half-widths (all rows without a guard)."""
        if self.max_shift_sigmas is None:
            return np.ones(len(shifts), dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.all(np.abs(shifts) <= self.max_shift_sigmas * features[:, BASE_WIDTH_FEATURES], axis=1)

    def calibrate(self, features: np.ndarray, residuals: np.ndarray, predicted_mag: np.ndarray) -> dict:
        """Interval factors per predicted-magnitude bin from held-out stamps the stage refines (stored on the stage and returned)."""
        from legato.models.uncertainty import binned_calibration_scales

        mean, sigma = self.residuals(features)
        ok = np.all(np.isfinite(mean), axis=1) & np.all(np.isfinite(residuals), axis=1) & self.guarded(features, mean)
        self.calibration = binned_calibration_scales(residuals[ok], mean[ok], sigma[ok], predicted_mag[ok], CALIBRATION_MAG_EDGES)
        return self.calibration

    def apply(self, stamps: np.ndarray, columns: dict, zeropoint: float) -> dict:
        """The base rows refined: new estimates and calibrated intervals, except on ``BLENDED``, unmeasured or guarded rows.

        Parameters
        ----------
        stamps : numpy.ndarray
            ``(N, H, W)`` stamps, electrons/s.
        columns : dict
            The base estimator's rows (its full column set).
        zeropoint : float or numpy.ndarray
            AB zeropoint of the rows' ``mag``, one or per row.
        """
        from legato.models.uncertainty import scale_for

        features = stage_features(stamps, columns, zeropoint)
        delta, sigma = self.residuals(features)
        flags = np.asarray(columns.get("flags", np.zeros(len(stamps))), dtype=np.int64)
        refine = np.all(np.isfinite(delta), axis=1) & ((flags & (BLENDED | int(NOT_PREDICTED))) == 0) & self.guarded(features, delta)
        out = dict(columns)
        new = {}
        for i, (name, log) in enumerate(LOG_TARGETS.items()):
            base = np.asarray(columns[name], dtype=np.float64)
            new[name] = base * np.exp(delta[:, i]) if log else base + delta[:, i]
        new["ellipticity"] = np.clip(new["ellipticity"], 0.0, 1.0 - 1e-3)
        for key, suffix in ERROR_SUFFIXES.items():
            factors = scale_for(self.calibration, key, np.where(refine, new["mag"], 0.0))
            for i, (name, log) in enumerate(LOG_TARGETS.items()):
                width = factors[:, i] * sigma[:, i]
                new[f"{name}{suffix}"] = width * new[name] if log else width
        for name, values in new.items():
            if name in out:
                out[name] = np.where(refine, values, np.asarray(out[name], dtype=np.float64))
        if "q" in out:
            out["q"] = np.where(refine, 1.0 - out["ellipticity"], out["q"])
        return out

    def save(self, folder: str | Path) -> None:
        """Write ``stage.keras`` and ``stage.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "stage.keras")
        record = {
            "targets": list(LOG_TARGETS),
            "growth_radii_pix": list(GROWTH_RADII_PIX),
            "moment_radii_pix": list(MOMENT_RADII_PIX),
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "residual_std": self.residual_std.tolist(),
            "calibration": self.calibration,
            "max_shift_sigmas": self.max_shift_sigmas,
        }
        (folder / "stage.json").write_text(json.dumps(record, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> RefinementStage:
        """Read a stage written by :meth:`save`."""
        import keras

        folder = Path(folder)
        record = json.loads((folder / "stage.json").read_text())
        if tuple(record["growth_radii_pix"]) != GROWTH_RADII_PIX or tuple(record["moment_radii_pix"]) != MOMENT_RADII_PIX:
            raise ConfigError(f"{folder}: the refinement stage was trained on other apertures than this version of legato computes")
        model = keras.saving.load_model(folder / "stage.keras", compile=False)
        return cls(
            model,
            record["feature_mean"],
            record["feature_std"],
            record["residual_std"],
            record["calibration"],
            record.get("max_shift_sigmas"),
        )


def write_refined_estimator(base: str | Path, stage: RefinementStage, out: str | Path, info: dict | None = None) -> Path:
    """Write a refined estimator folder: ``base/`` (the base estimator, copied with its lineage) and ``refinement/``.

    Raises
    ------
    ConfigError
        When the base is not a plain estimator with uncertainties (a routed or refined one, or one without intervals).
    """
    from legato.io.folders import publish_folder, staging_with
    from legato.models.estimator import MANIFEST, read_manifest

    base = Path(base)
    manifest = read_manifest(base)
    if manifest.get("kind") in (REFINED_KIND, "routed") or not manifest.get("uncertainty"):
        raise ConfigError(f"{base}: the refinement stage needs a plain estimator with uncertainties")
    out = Path(out)
    staging, lineage = staging_with({"base": base}, out)
    stage.save(staging / "refinement")
    refined = {
        "kind": REFINED_KIND,
        "stamp_size": manifest["stamp_size"],
        "base": "base",
        "refinement": "refinement",
        "architecture": f"{manifest.get('architecture', 'production')}+refined",
        "training": {
            "recipe": {"base": str(base), **(info or {})},
            "lineage": lineage["base"],
        },
        **{key: manifest[key] for key in ("psf_input", "input_range", "uncertainty", "reference_sigma") if key in manifest},
        "targets": list(SERSIC_COLUMNS),
    }
    (staging / MANIFEST).write_text(json.dumps(refined, indent=2))
    publish_folder(staging, out)
    return out / MANIFEST
