"""Exact-model refit: the maximum-likelihood single Sérsic of a stamp, started from an estimate.

At high signal-to-noise the likelihood of a stamp is sharply peaked and its maximum is
an efficient estimator: its scatter reaches the Cramér-Rao bound
(:mod:`legato.modelling.bounds`). A network trained over the whole magnitude range does
not get there for the rare bright galaxies, and a classical fitter whose model differs
from the truth's rendering (Imfit's Sérsic against GalSim's) is biased by more than the
bound. This refit closes the gap: Levenberg-Marquardt on the Fisher parameters
(``mag``, ``ln_re``, ``ln_n``, ``e1``, ``e2``, ``x0``, ``y0``) of the simulator's own
GalSim model, weighted by its sky plus source Poisson variance, started from a
network's estimate (centre and position angle from the stamp's adaptive moments).
Each iteration reuses the Jacobian the bound is made of, so the fit's formal errors at
its solution are the bound there.

The refit is meant for stamps where the network is far from the limit: bright, isolated
single-Sérsic galaxies (``legato predict --refit-brighter-than``, docs/predict.md). A start
outside the refit's range is moved inside it; a start that cannot be rendered, a solution
on a limit of the range or one still moving after ``max_iterations`` comes back flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from legato.modelling.bounds import (
    StampModel,
    catalogue_bounds,
    fisher_matrix,
    fisher_point,
    inverse_fisher,
    model_jacobian,
)
from legato.modelling.renderer import SERSIC_N_RANGE, Geometry, stamp_geometry

# flag bits of a refit (0 = converged)
NOT_CONVERGED = 1  # the iteration limit was reached before the steps fell below the tolerance
NO_FIT = 2  # the start could not be rendered or its Fisher matrix was singular: the start is returned
AT_LIMIT = 4  # the solution sits on a limit of the refit's range in re, ellipticity or centre: not a maximum of the likelihood
REFIT_FLAG_NAMES = {NOT_CONVERGED: "not_converged", NO_FIT: "no_fit", AT_LIMIT: "at_limit"}

# The refit's range: inside the model's limits with a margin for the finite-difference stencil, and
# bounded where GalSim's FFT grows without bound (a high-n profile larger than the stamp needs
# gigabytes): n <= 6, q >= 0.1, re from 0.3 pixel to half the stamp side, centre within 6 pixels.
# The n limits are the simulator's prior (0.3-6.2, less the margins): a maximum there is the
# constrained maximum likelihood and is kept (a true n of 0.3 is found at 0.31); a solution on any
# other limit is flagged AT_LIMIT.
_LN_N_RANGE = (np.log(SERSIC_N_RANGE[0]) + 0.03, np.log(6.0))
_MAX_ELLIPTICITY = 0.9
_RE_MIN_PIX = 0.3  # the largest radius is half the stamp side
_MAX_CENTRE_PIX = 6.0


@dataclass(frozen=True)
class RefitSettings:
    """Iteration controls of the refit.

    Attributes
    ----------
    max_iterations : int
        Jacobian evaluations at most (each renders the model 13 times, plus one render per tried step).
    tolerance : float
        Convergence: every step smaller than this fraction of its parameter's bound.
        From a network's start the first step is mostly the last one of any size.
    damping : float
        Initial Levenberg-Marquardt damping (relative to the Fisher diagonal).
    folding_threshold : float
        GalSim FFT accuracy of the renders (:class:`StampModel`): 5e-3 renders a bright
        galaxy 3x faster than the bound's 1e-3; refitting the 197 Table 1 test galaxies of
        H < 21 with either gave the same RMSE / CRB to 0.01. The simulator draws with 2e-2.
    """

    max_iterations: int = 8
    tolerance: float = 0.2
    damping: float = 1e-3
    folding_threshold: float = 5e-3


@dataclass(frozen=True)
class Refit:
    """The result of one refit.

    Attributes
    ----------
    theta : numpy.ndarray
        Fisher parameters at the solution (``FISHER_PARAMETERS`` order).
    estimate : dict
        ``mag`` (AB), ``re_arcsec``, ``n``, ``ellipticity``, ``pa_deg``,
        ``x_offset_pix``, ``y_offset_pix``.
    errors : dict
        1-sigma formal errors at the solution (the Cramér-Rao bound there):
        ``mag_err``, ``re_arcsec_err``, ``n_err``, ``ellipticity_err``; NaN when unavailable.
    reduced_chi2 : float
        Chi-square per pixel of the solution.
    iterations : int
        Jacobian evaluations made.
    flags : int
        Bit mask of ``REFIT_FLAG_NAMES`` (0: converged).
    """

    theta: np.ndarray
    estimate: dict
    errors: dict
    reduced_chi2: float
    iterations: int
    flags: int


def _ln_re_range(stamp_model: StampModel) -> tuple[float, float]:
    scale = stamp_model.renderer.pixel_scale
    return float(np.log(_RE_MIN_PIX * scale)), float(np.log(stamp_model.renderer.size / 2 * scale))


def _in_range(theta: np.ndarray, stamp_model: StampModel) -> np.ndarray:
    """``theta`` moved inside the refit's range (every stencil of the Jacobian renders there)."""
    theta = np.array(theta, dtype=float)
    theta[1] = np.clip(theta[1], *_ln_re_range(stamp_model))
    theta[2] = np.clip(theta[2], *_LN_N_RANGE)
    e = np.hypot(theta[3], theta[4])
    if e > _MAX_ELLIPTICITY:
        theta[3:5] *= _MAX_ELLIPTICITY / e
    theta[5:7] = np.clip(theta[5:7], -_MAX_CENTRE_PIX, _MAX_CENTRE_PIX)
    return theta


def _at_limit(theta: np.ndarray, stamp_model: StampModel) -> bool:
    """Whether ``theta`` sits on a limit of the refit's range other than n's (the prior's: kept)."""
    near = 1e-6
    ln_re = _ln_re_range(stamp_model)
    on_re = min(abs(theta[1] - ln_re[0]), abs(theta[1] - ln_re[1])) < near
    on_e = np.hypot(theta[3], theta[4]) > _MAX_ELLIPTICITY - near
    return bool(on_re or on_e or np.any(np.abs(theta[5:7]) > _MAX_CENTRE_PIX - near))


def _estimate(theta: np.ndarray) -> dict:
    e = float(np.hypot(theta[3], theta[4]))
    return {
        "mag": float(theta[0]),
        "re_arcsec": float(np.exp(theta[1])),
        "n": float(np.exp(theta[2])),
        "ellipticity": e,
        "pa_deg": float(np.degrees(0.5 * np.arctan2(theta[4], theta[3]))) if e > 0 else 0.0,
        "x_offset_pix": float(theta[5]),
        "y_offset_pix": float(theta[6]),
    }


def _errors(theta: np.ndarray, covariance: np.ndarray | None) -> dict:
    if covariance is None:
        return dict.fromkeys(("mag_err", "re_arcsec_err", "n_err", "ellipticity_err"), float("nan"))
    bounds = catalogue_bounds(theta, covariance)
    return {
        "mag_err": bounds["crb_mag"],
        "re_arcsec_err": bounds["crb_re_arcsec"],
        "n_err": bounds["crb_n"],
        "ellipticity_err": bounds["crb_ellipticity"],
    }


def _variance(model: np.ndarray, stamp_model: StampModel, mask: np.ndarray | None) -> np.ndarray:
    """Per-pixel variance of the model; infinite (zero weight) on masked pixels."""
    variance = stamp_model.variance(model)
    return variance if mask is None else np.where(mask, np.inf, variance)


def _chi2(stamp: np.ndarray, model: np.ndarray, stamp_model: StampModel, mask: np.ndarray | None) -> float:
    return float(np.sum((stamp - model) ** 2 / _variance(model, stamp_model, mask)))


def start_point(stamp: np.ndarray, estimate, stamp_model: StampModel, geometry: Geometry | None = None) -> np.ndarray:
    """Fisher parameters to start from: a network's (mag, re_arcsec, n, ellipticity), the stamp's moments for centre and angle."""
    geometry = stamp_geometry(stamp) if geometry is None else geometry
    mag, re_arcsec, n, ellipticity = (float(v) for v in estimate)
    if not (re_arcsec > 0 and n > 0):
        return np.full(7, np.nan)
    theta = fisher_point(mag, re_arcsec, n, ellipticity, geometry.pa_deg, geometry.x_offset_pix, geometry.y_offset_pix)
    return _in_range(theta, stamp_model)


def refit_stamp(
    stamp: np.ndarray,
    estimate,
    stamp_model: StampModel,
    settings: RefitSettings = RefitSettings(),
    geometry: Geometry | None = None,
    mask: np.ndarray | None = None,
) -> Refit:
    """Maximum-likelihood single Sérsic of ``stamp``, started from ``estimate``.

    Parameters
    ----------
    stamp : numpy.ndarray
        ``(size, size)`` background-subtracted stamp, electrons/s.
    estimate : sequence of float
        Start: ``(mag, re_arcsec, n, ellipticity)``.
    stamp_model : StampModel
        PSF, pixel scale, zeropoint and noise of the stamp.
    settings : RefitSettings
        Iteration controls.
    geometry : Geometry, optional
        Position angle and centre to start from (default: the stamp's adaptive moments).
    mask : numpy.ndarray, optional
        Boolean ``(size, size)``: pixels left out of the likelihood (other sources' segments,
        as the classical fitter masks them).

    Returns
    -------
    Refit
        The solution with its formal errors; the start with ``NO_FIT`` when the start
        cannot be rendered or carries no information.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    stamp_model = replace(stamp_model, folding_threshold=settings.folding_threshold)
    theta = start_point(stamp, estimate, stamp_model, geometry)
    pixels = stamp.size if mask is None else max(int(np.count_nonzero(~mask)), 1)
    damping, covariance, chi2 = settings.damping, None, float("nan")

    def result(iterations: int, flags: int) -> Refit:
        """The refit at the current ``theta`` with the covariance of the last Jacobian."""
        return Refit(theta, _estimate(theta), _errors(theta, covariance), chi2 / pixels, iterations, flags)

    if not np.all(np.isfinite(theta)) or not np.all(np.isfinite(stamp)):
        return result(0, NO_FIT)
    for iteration in range(1, settings.max_iterations + 1):
        try:
            model, jacobian = model_jacobian(theta, stamp_model)
        except Exception:  # noqa: BLE001 - GalSim raises several types for unrenderable profiles
            return result(iteration - 1, NO_FIT if covariance is None else NOT_CONVERGED)
        variance = _variance(model, stamp_model, mask)
        chi2 = float(np.sum((stamp - model) ** 2 / variance))
        fisher = fisher_matrix(jacobian, variance)
        covariance = inverse_fisher(fisher)
        if covariance is None:
            return result(iteration, NO_FIT)
        gradient = jacobian.reshape(len(theta), -1) @ ((stamp - model) / variance).ravel()
        tolerance = settings.tolerance * np.sqrt(np.diag(covariance))
        for _ in range(6):
            step = np.linalg.solve(fisher + damping * np.diag(np.diag(fisher)), gradient)
            trial = _in_range(theta + step, stamp_model)
            small = bool(np.all(np.abs(trial - theta) <= tolerance))  # the step taken: one into a limit stops there
            try:
                trial_chi2 = _chi2(stamp, stamp_model.render(trial), stamp_model, mask)
            except Exception:  # noqa: BLE001 - a step into an unrenderable profile is a rejected step
                damping *= 10.0
                continue
            if trial_chi2 <= chi2:
                theta, chi2, damping = trial, trial_chi2, max(damping / 10.0, 1e-6)
                break
            if small:  # at the optimum to the precision of the renders: stay
                break
            damping *= 10.0
        else:
            return result(iteration, NOT_CONVERGED)
        if small:  # the covariance of the last Jacobian: the solution moved by less than a tolerance of its bound
            return result(iteration, AT_LIMIT if _at_limit(theta, stamp_model) else 0)
    return result(settings.max_iterations, NOT_CONVERGED)
