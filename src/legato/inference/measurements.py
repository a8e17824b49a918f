"""Per-galaxy measurements added to an estimator's predictions: ``legato predict --crb`` / ``--residuals``.

Both need the stamp, the estimate (mag, re, n, ellipticity), the stamp's noise and the
galaxy's position angle and centre, which the networks do not estimate: these come from
the stamp's adaptive moments (:func:`legato.modelling.renderer.stamp_geometry`); the noise
is the one the estimator measured (``sky_sigma``, production estimator) or the border's NMAD.

- :class:`BoundAugmentation` (``--crb``): the Cramér-Rao bound at the estimate
  (``crb_*``, docs/crb.md); ``NO_BOUND`` where there is none.
- :class:`ResidualAugmentation` (``--residuals``): goodness of fit of the estimate's
  model (``chi2_nu``, ``residual_flux_fraction``, ``residual_asymmetry``,
  docs/fit_quality.md); ``BAD_FIT`` above the calibrated chi² threshold.
- :class:`RefitAugmentation` (``--refit-brighter-than``): the exact-model maximum-likelihood
  fit started from the estimate (:mod:`legato.modelling.refit`) replaces the estimate and
  its intervals on bright stamps not flagged ``BLENDED`` (``refit`` column, docs/predict.md).

:class:`AugmentedEstimator` runs them in worker processes, so rendering uses every core.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from legato.analysis.morphometry import border_sigma
from legato.analysis.segmentation import segment_stamp
from legato.columns import ERROR_SUFFIXES, OUTPUT_COLUMNS, SERSIC_COLUMNS
from legato.flags import StampFlag
from legato.modelling.bounds import BOUND_COLUMNS, StampModel, fisher_point, galaxy_bound
from legato.modelling.refit import RefitSettings, refit_stamp
from legato.modelling.renderer import Geometry, ModelRenderer, stamp_geometry
from legato.modelling.statistics import STATISTICS, fit_statistics

BLOCK = 64  # stamps per worker task


class BoundAugmentation:
    """The Cramér-Rao bound at the estimate (sky noise, plus source noise with ``exposure_time``)."""

    flag = int(StampFlag.NO_BOUND)

    def __init__(self, renderer: ModelRenderer, exposure_time: float | None = None):
        self.renderer = renderer
        self.exposure_time = exposure_time
        self.columns = tuple(BOUND_COLUMNS.values())

    def measure(self, stamp, estimate, sigma: float, geometry: Geometry, flags: int = 0) -> tuple[dict, bool]:
        """``(crb columns, flagged)``; NaN bounds when flagged."""
        theta = fisher_point(*estimate, geometry.pa_deg, geometry.x_offset_pix, geometry.y_offset_pix)
        bounds, flag = galaxy_bound(theta, StampModel(self.renderer, sigma, self.exposure_time))
        return {c: bounds[c] for c in self.columns}, bool(flag)


class ResidualAugmentation:
    """Goodness of fit of the estimate's model; flagged above ``chi2_threshold``."""

    flag = int(StampFlag.BAD_FIT)
    columns = STATISTICS

    def __init__(self, renderer: ModelRenderer, chi2_threshold: float, exposure_time: float | None = None):
        self.renderer = renderer
        self.chi2_threshold = chi2_threshold
        self.exposure_time = exposure_time

    def measure(self, stamp, estimate, sigma: float, geometry: Geometry, flags: int = 0) -> tuple[dict, bool]:
        """``(statistics, flagged)``: the statistics are kept when flagged."""
        model = self.renderer.render(*estimate, geometry=geometry)
        statistics = fit_statistics(stamp, model, sigma, self.exposure_time)
        return statistics.as_dict(), not statistics.chi2_nu <= self.chi2_threshold


REFIT_SKIP = int(StampFlag.BLENDED)  # a single Sérsic does not describe a stamp with a neighbour on the target
REFIT_ERROR_COLUMNS = tuple(f"{c}{suffix}" for c in SERSIC_COLUMNS for suffix in ERROR_SUFFIXES.values())
Z95 = 1.959964  # the 95% half-width of a Gaussian in sigma


def correlated_noise_inflation(stamp: np.ndarray, sources: np.ndarray, significance: float = 3.0) -> float:
    """How much wider errors computed for independent pixels must be on this stamp's correlated noise.

    On scales larger than its correlation length, noise of per-pixel sigma smoothed by a kernel of
    norm ``k`` (:func:`legato.simulation.noise.correlation_norm`) carries the information of white
    noise of sigma ``sigma / k``: errors scale by ``1 / k``. The lag-1 correlation is measured on the
    pixels outside ``sources``; below ``significance`` standard errors of a white-noise estimate
    (``1 / sqrt(pixels)``) the noise counts as white and the factor is 1.
    """
    from legato.analysis.noise_texture import kernel_sigma_for_measured_correlation, noise_statistics
    from legato.simulation.noise import correlation_norm

    stats = noise_statistics(stamp, sources)
    correlation = float(stats.correlation.get(1, np.nan))
    if not correlation > significance / np.sqrt(max(stats.n_pixels, 1)):
        return 1.0
    return 1.0 / correlation_norm(kernel_sigma_for_measured_correlation(correlation))


def refit_mask(stamp: np.ndarray) -> np.ndarray:
    """The pixels of other sources the refit leaves out: the blend detector's neighbour map, grown.

    The map of :func:`legato.io.stamp_checks.blend_measurements` (significant peaks with a real
    saddle, the measurement ``BLENDED`` and the deblended input use in every inference path) as
    pixels grown by :data:`legato.io.deblend.DEBLEND_GROW_PIX`. The photutils segmentation the
    classical labels use splits some large, low-n isolated galaxies into pieces (6 of 300 H <= 23
    F160W simulations, 357 pixels on one): masking those pieces biased their refit by up to 0.09 mag.
    """
    from legato.io.deblend import neighbour_pixels
    from legato.io.stamp_checks import blend_measurements

    neighbour_map = blend_measurements(stamp[None], with_map=True)[2]
    return neighbour_pixels(neighbour_map, stamp.shape[-1])[0]


class RefitAugmentation:
    """The exact-model maximum-likelihood fit of stamps brighter than ``mag_limit``, started from the estimate.

    Other sources' pixels (:func:`refit_mask`: the blend detector's neighbours, as ``BLENDED`` and
    the deblended input see them) are left out of the likelihood unless ``mask_neighbours`` is False. The
    formal errors assume independent pixels; where the stamp's noise is measurably correlated
    (drizzled mosaics, the realistic domain) they are widened by :func:`correlated_noise_inflation`.
    Where the refit converges, it replaces the estimate (``mag``, ``re_arcsec``, ``n``, ``q``,
    ``ellipticity``) and its intervals (the formal errors at the solution, which are the
    Cramér-Rao bound there; 95%: 1.96 of them) and sets ``refit`` to 1; elsewhere (fainter,
    ``BLENDED`` unless ``blended``, or no convergence) the estimate stands and ``refit`` is 0.
    With ``blended``, stamps flagged ``BLENDED`` are refit too: the masked single-Sérsic fit the
    classical labels are, not a model of the blend.
    """

    flag = 0
    columns = (*OUTPUT_COLUMNS, *REFIT_ERROR_COLUMNS, "refit")

    def __init__(
        self,
        renderer: ModelRenderer,
        mag_limit: float,
        exposure_time: float | None = None,
        settings=RefitSettings(),
        mask_neighbours: bool = True,
        blended: bool = False,
    ):
        self.renderer = renderer
        self.skip = 0 if blended else REFIT_SKIP
        self.mag_limit = float(mag_limit)
        self.exposure_time = exposure_time
        self.settings = settings
        self.mask_neighbours = mask_neighbours

    def measure(self, stamp, estimate, sigma: float, geometry: Geometry, flags: int = 0) -> tuple[dict, bool]:
        """``(replaced columns, False)``: ``{"refit": 0}`` alone where the estimate stands."""
        if not estimate[0] < self.mag_limit or flags & self.skip:
            return {"refit": 0}, False
        mask = refit_mask(stamp) if self.mask_neighbours else None
        refit = refit_stamp(stamp, estimate, StampModel(self.renderer, sigma, self.exposure_time), self.settings, geometry, mask)
        if refit.flags or not np.all(np.isfinite(list(refit.errors.values()))):
            return {"refit": 0}, False
        values = {c: refit.estimate[c] for c in SERSIC_COLUMNS}
        inflation = correlated_noise_inflation(stamp, segment_stamp(stamp, sigma).source_mask)
        errors = {f"{c}{ERROR_SUFFIXES['68']}": inflation * refit.errors[f"{c}_err"] for c in SERSIC_COLUMNS}
        errors95 = {f"{c}{ERROR_SUFFIXES['95']}": Z95 * inflation * refit.errors[f"{c}_err"] for c in SERSIC_COLUMNS}
        return {**values, "q": 1.0 - values["ellipticity"], **errors, **errors95, "refit": 1}, False


def measure_block(augmentations, stamps, estimates, sigmas, flags=None) -> list[list[tuple[dict, bool]]]:
    """Every augmentation on every stamp of a block (one geometry per stamp; ``flags``: the rows' flags so far)."""
    flags = np.zeros(len(stamps), dtype=np.int64) if flags is None else flags
    results = []
    for stamp, estimate, sigma, row_flags in zip(stamps, estimates, sigmas, flags):
        stamp = np.asarray(stamp, dtype=np.float64)
        geometry = stamp_geometry(stamp)
        if not (np.isfinite(sigma) and sigma > 0):
            sigma = border_sigma(stamp)
        results.append(
            [augmentation.measure(stamp, tuple(estimate), float(sigma), geometry, int(row_flags)) for augmentation in augmentations]
        )
    return results


_WORKER: dict = {}


def _init_worker(augmentations) -> None:
    _WORKER["augmentations"] = augmentations


def _worker_block(task):
    return measure_block(_WORKER["augmentations"], *task)


class AugmentedEstimator:
    """An estimator whose predictions carry the columns of ``augmentations``.

    Parameters
    ----------
    estimator : LoadedEstimator
        The estimator to wrap (any kind).
    augmentations : sequence
        :class:`BoundAugmentation` and/or :class:`ResidualAugmentation`.
    workers : int
        Processes measuring the stamps (1: in this process). Close with :meth:`close`
        or use as a context manager.
    """

    def __init__(self, estimator, augmentations, workers: int = 1):
        self.estimator = estimator
        self.augmentations = tuple(augmentations)
        self.workers = max(1, int(workers))
        self._pool = None

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The wrapped estimator's columns, then the augmentations' new ones, then ``flags``."""
        inner = tuple(c for c in self.estimator.output_columns if c != "flags")
        added = (c for a in self.augmentations for c in a.columns if c not in inner)
        return (*inner, *dict.fromkeys(added), "flags")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def measure(self, stamps, estimates, sigmas, flags=None) -> list[list[tuple[dict, bool]]]:
        """Every augmentation on every stamp: per stamp, one ``(values, flagged)`` per augmentation.

        ``estimates`` is ``(N, 4)`` (mag, re_arcsec, n, ellipticity), all finite; ``sigmas``
        the per-pixel sky noise (NaN: measured on the stamp border); ``flags`` the rows' flags so far.
        """
        flags = np.zeros(len(stamps), dtype=np.int64) if flags is None else np.asarray(flags)
        order = np.argsort(np.asarray(estimates)[:, 2], kind="stable")  # GalSim reuses its Sérsic table (8x faster)
        measured = [r for block in self._blocks(stamps[order], estimates[order], sigmas[order], flags[order]) for r in block]
        results: list = [None] * len(order)
        for position, result in zip(order, measured):
            results[position] = result
        return results

    def _blocks(self, stamps, estimates, sigmas, flags):
        tasks = [
            (stamps[k : k + BLOCK], estimates[k : k + BLOCK], sigmas[k : k + BLOCK], flags[k : k + BLOCK])
            for k in range(0, len(stamps), BLOCK)
        ]
        if self.workers == 1 or len(tasks) == 1:
            return [measure_block(self.augmentations, *task) for task in tasks]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, initializer=_init_worker, initargs=(self.augmentations,))
        return list(self._pool.map(_worker_block, tasks))

    @property
    def psf_bands(self) -> dict | None:
        """The wrapped estimator's training bands (:attr:`legato.models.estimator.LoadedEstimator.psf_bands`)."""
        return getattr(self.estimator, "psf_bands", None)

    def psf_condition(self, **options):
        """The wrapped estimator's (:meth:`legato.models.estimator.LoadedEstimator.psf_condition`)."""
        return self.estimator.psf_condition(**options)

    @property
    def measures_blends(self) -> bool:
        """The wrapped estimator's (:attr:`legato.models.estimator.LoadedEstimator.measures_blends`)."""
        return getattr(self.estimator, "measures_blends", False)

    def measure_blends(self, stamps):
        """The wrapped estimator's (:meth:`legato.models.estimator.LoadedEstimator.measure_blends`)."""
        return self.estimator.measure_blends(stamps)

    def predict(self, stamps, batch_size: int = 256, checked: bool = False, **options) -> dict[str, np.ndarray]:
        """The estimator's predictions plus the augmentation columns and flag bits (``checked``: as the estimator's)."""
        return self.augment(self.estimator.predict(stamps, batch_size=batch_size, checked=checked, **options), stamps)

    def augment(self, values, stamps) -> dict[str, np.ndarray]:
        """``values`` (estimates of ``stamps``: any method's) plus the augmentation columns and flag bits."""
        values = {name: np.asarray(values[name]) for name in (getattr(values, "colnames", None) or values)}
        stamps = np.asarray(stamps)
        flags = np.asarray(values.get("flags", np.zeros(len(stamps), dtype=np.int32))).copy()
        columns = {  # a column the estimator has keeps its value where an augmentation leaves it (the refit's)
            c: np.array(values[c], dtype=float) if c in values else np.full(len(stamps), np.nan)
            for a in self.augmentations
            for c in a.columns
        }
        estimates = np.stack([np.asarray(values[c], dtype=float) for c in SERSIC_COLUMNS], axis=1)
        rows = np.flatnonzero(np.all(np.isfinite(estimates), axis=1))  # rows without an estimate stay NaN, unflagged
        sigmas = np.asarray(values["sky_sigma"], dtype=float)[rows] if "sky_sigma" in values else np.full(len(rows), np.nan)
        for row, per_augmentation in zip(rows, self.measure(stamps[rows], estimates[rows], sigmas, flags[rows])):
            for augmentation, (result, flagged) in zip(self.augmentations, per_augmentation):
                for name, value in result.items():
                    columns[name][row] = value
                if flagged:
                    flags[row] |= augmentation.flag
        return {**values, **columns, "flags": flags}
