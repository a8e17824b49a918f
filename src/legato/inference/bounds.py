"""``legato predict --crb``: the Cramér-Rao bound of every galaxy at its predicted parameters.

A catalogue row then says how well the stamp's noise allows the galaxy to be measured
at all (``crb_*``, standard deviations in the parameter's unit), beside what the
estimator gives (``*_err`` for the production estimator): where the error is near the
bound the measurement is noise-limited; far above it, method-limited.

The bound is computed at the estimate (mag, re, n, ellipticity), with the position
angle and centre from the stamp's moments (the networks do not estimate them; the bound
hardly depends on them), the per-pixel sky noise the estimator measured (``sky_sigma``,
production estimator) or the stamp border's NMAD, and the PSF of the simulator.
Source Poisson noise enters only with ``--exposure-time``. It costs 13 renders per
galaxy (about 40 ms on one core), so it is off by default.
"""

from __future__ import annotations

import numpy as np

from legato.analysis.morphometry import border_sigma
from legato.classical.initial import initial_guess
from legato.evaluation.crb import StampModel, fisher_point, galaxy_bound
from legato.inference.flags import StampFlag

BOUND_OUTPUT = ("crb_mag", "crb_re_arcsec", "crb_n", "crb_ellipticity")


class BoundEstimator:
    """An estimator whose predictions carry the Cramér-Rao bound at the estimate.

    Parameters
    ----------
    estimator : LoadedEstimator
        The estimator to wrap (any kind).
    psf : galsim.GSObject
        PSF profile without the output-pixel response.
    pixel_scale : float
        Arcsec / pixel.
    zeropoint : float
        AB magnitude of 1 electron/s.
    exposure_time : float, optional
        Effective exposure time (s) for the source's Poisson noise; sky noise only if None.
    """

    def __init__(self, estimator, psf, pixel_scale: float, zeropoint: float, exposure_time: float | None = None):
        self.estimator = estimator
        self.psf = psf
        self.pixel_scale = pixel_scale
        self.zeropoint = zeropoint
        self.exposure_time = exposure_time

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The wrapped estimator's columns, then the bounds, then ``flags``."""
        inner = tuple(c for c in self.estimator.output_columns if c != "flags")
        return (*inner, *BOUND_OUTPUT, "flags")

    def predict(self, stamps, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Predictions plus ``crb_*`` columns; ``NO_BOUND`` where an estimate has no valid bound."""
        values = dict(self.estimator.predict(stamps, batch_size=batch_size))
        stamps = np.asarray(stamps, dtype=np.float64)
        flags = np.asarray(values.get("flags", np.zeros(len(stamps), dtype=np.int32))).copy()
        bounds = {name: np.full(len(stamps), np.nan) for name in BOUND_OUTPUT}
        for k, stamp in enumerate(stamps):
            estimate = [float(values[c][k]) for c in ("mag", "re_arcsec", "n", "ellipticity")]
            if not np.all(np.isfinite(estimate)):
                continue  # no estimate, already flagged by the estimator or the stamp checks
            bound, flag = self.galaxy_bound(stamp, estimate, None if "sky_sigma" not in values else float(values["sky_sigma"][k]))
            if flag:
                flags[k] |= int(StampFlag.NO_BOUND)
                continue
            for name in BOUND_OUTPUT:
                bounds[name][k] = bound[name]
        return {**values, **bounds, "flags": flags}

    def galaxy_bound(self, stamp: np.ndarray, estimate, sky_sigma: float | None) -> tuple[dict, int]:
        """The bound of one stamp at ``estimate`` (mag, re_arcsec, n, ellipticity)."""
        sigma = sky_sigma if sky_sigma is not None and np.isfinite(sky_sigma) and sky_sigma > 0 else border_sigma(stamp)
        if not (np.isfinite(sigma) and sigma > 0):
            return {}, 1
        guess = initial_guess(stamp, sigma)
        centre = stamp.shape[0] // 2
        theta = fisher_point(*estimate, pa_deg=guess.pa_deg, x_offset_pix=guess.x - centre, y_offset_pix=guess.y - centre)
        stamp_model = StampModel(
            psf=self.psf, size=stamp.shape[0], pixel_scale=self.pixel_scale, zeropoint=self.zeropoint,
            sky_sigma=float(sigma), exposure_time=self.exposure_time,
        )
        return galaxy_bound(theta, stamp_model)
