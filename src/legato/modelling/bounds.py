"""The Cramér-Rao bound of single-Sérsic stamps: the physical limit of any unbiased estimator.

For a stamp whose pixels are independent with mean ``mu(theta)`` (the noiseless,
PSF-convolved model in electrons/s) and variance ``V = sky_sigma**2 +
mu / exposure_time`` (sky plus source Poisson, :class:`~legato.simulation.noise.NoiseModel`),
the Fisher information is ``F = sum_pixels d mu/d theta_i  d mu/d theta_j / V``; this
is exact for the Poisson counts the simulator draws (``F = sum t (d mu)^2 / (mu + B)``).
The bound on the covariance of any unbiased estimator is ``F^-1``.

Parameters of the Fisher matrix (``FISHER_PARAMETERS``): total magnitude ``mag``,
``ln_re`` (ln of the semi-major half-light radius in arcsec), ``ln_n`` (ln of the
Sérsic index), the ellipticity vector ``e1 = e cos 2 PA``, ``e2 = e sin 2 PA``
(``e = 1 - q``, PA in GALFIT's convention), and the centre ``x0``, ``y0`` in pixels.
Position angle and centre are nuisance parameters: being in the matrix, the bound
accounts for not knowing them. The (e1, e2) pair keeps the matrix regular for round
galaxies, whose position angle is undefined.

The model is the simulator's own GalSim rendering
(:func:`legato.simulation.render.render_sersic_stamp`); derivatives are central
finite differences (``mag`` analytic: ``d mu / d mag = -0.4 ln 10 mu``). The step in
``ln_n`` is one step of the simulator's Sérsic-index grid, so GalSim reuses its
profile tables; :func:`step_convergence` shows the bound does not change when the
steps are doubled.

Reported bounds (``BOUND_COLUMNS``) are standard deviations of the quantities the
evaluation scores, by the delta method: ``mag`` (mag), ``re_arcsec`` (arcsec),
``n`` and ``ellipticity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from legato.modelling.renderer import SERSIC_N_RANGE, ModelRenderer

FISHER_PARAMETERS = ("mag", "ln_re", "ln_n", "e1", "e2", "x0", "y0")
BOUND_COLUMNS = {"mag": "crb_mag", "re": "crb_re_arcsec", "n": "crb_n", "ellipticity": "crb_ellipticity"}
BOUND_UNITS = {"crb_mag": "mag", "crb_re_arcsec": "arcsec"}
# the smallest axis ratio a step may reach (GalSim's Sérsic range: legato.modelling.renderer.SERSIC_N_RANGE)
MIN_AXIS_RATIO = 0.02

# flag bits of a bound (0 = a valid bound)
ILL_CONDITIONED = 1  # Fisher matrix singular, ill-conditioned, or a bound wider than its parameter's range
AT_BOUND = 2  # a finite-difference step would leave the model's valid range (n, q at a limit)
RENDER_FAILED = 4  # the model could not be rendered
FLAG_NAMES = {ILL_CONDITIONED: "ill_conditioned", AT_BOUND: "at_bound", RENDER_FAILED: "render_failed"}

MAX_CONDITION = 1e10
# A bound above these (sigma of ln re, ln n: a factor e; sigma of e: its whole range) is no
# measurement at all, and the linearisation behind the bound does not hold there.
MAX_BOUND = {"crb_ln_re": 1.0, "crb_ln_n": 1.0, "crb_ellipticity": 1.0}


@dataclass(frozen=True)
class FiniteSteps:
    """Central finite-difference steps of the Fisher parameters.

    Attributes
    ----------
    ln_re : float
        Step in ln(re / arcsec).
    ln_n_dex : float
        Step in log10(n); the default is the simulator's Sérsic-index grid step.
    ellipticity : float
        Step in e1 and e2.
    centre_pix : float
        Step in x0 and y0, pixels.
    """

    ln_re: float = 2e-3
    ln_n_dex: float = 0.005
    ellipticity: float = 2e-3
    centre_pix: float = 0.02

    def scaled(self, factor: float) -> FiniteSteps:
        """The same steps times ``factor`` (for the convergence check)."""
        return FiniteSteps(self.ln_re * factor, self.ln_n_dex * factor, self.ellipticity * factor, self.centre_pix * factor)


@dataclass(frozen=True)
class StampModel:
    """How stamps are rendered and what noise they carry (the simulator's conventions).

    Attributes
    ----------
    renderer : ModelRenderer
        PSF, stamp size, pixel scale and zeropoint of the renders.
    sky_sigma : float
        Sky noise, electrons/s/pixel.
    exposure_time : float or None
        Effective exposure time, s (source Poisson noise); None for sky noise only.
    steps : FiniteSteps
        Finite-difference steps.
    folding_threshold : float
        GalSim FFT accuracy of the renders (finer than the simulator's: a derivative
        must not see the FFT box change size between two nearby parameter values).
    """

    renderer: ModelRenderer
    sky_sigma: float
    exposure_time: float | None = None
    steps: FiniteSteps = field(default_factory=FiniteSteps)
    folding_threshold: float = 1e-3

    def variance(self, model: np.ndarray) -> np.ndarray:
        """Per-pixel variance of a stamp with noiseless ``model`` (electrons/s)^2."""
        source = 0.0 if self.exposure_time is None else np.clip(model, 0.0, None) / self.exposure_time
        return np.broadcast_to(self.sky_sigma**2 + source, np.shape(model))

    def render(self, theta) -> np.ndarray:
        """Noiseless stamp at Fisher parameters ``theta`` (``FISHER_PARAMETERS`` order), electrons/s."""
        from legato.simulation.render import render_sersic_stamp

        mag, ln_re, ln_n, e1, e2, x0, y0 = (float(v) for v in theta)
        e = float(np.hypot(e1, e2))
        pa_deg = float(np.degrees(0.5 * np.arctan2(e2, e1))) if e > 0 else 0.0
        renderer = self.renderer  # n exact (not snapped to the grid): a finite difference needs it
        return render_sersic_stamp(
            mag,
            np.exp(ln_re),
            np.exp(ln_n),
            1.0 - e,
            pa_deg,
            x0,
            y0,
            psf=renderer.psf,
            size=renderer.size,
            pixel_scale=renderer.pixel_scale,
            zeropoint=renderer.zeropoint,
            folding_threshold=self.folding_threshold,
        )


def fisher_point(
    mag: float, re_arcsec: float, n: float, ellipticity: float, pa_deg: float, x_offset_pix: float = 0.0, y_offset_pix: float = 0.0
) -> np.ndarray:
    """Fisher parameters (``FISHER_PARAMETERS`` order) of a galaxy in the catalogue's terms."""
    angle = 2.0 * np.radians(pa_deg)
    return np.array(
        [mag, np.log(re_arcsec), np.log(n), ellipticity * np.cos(angle), ellipticity * np.sin(angle), x_offset_pix, y_offset_pix],
        dtype=float,
    )


def stencil_in_range(theta, steps: FiniteSteps) -> bool:
    """Whether every central-difference step stays inside the model's valid range."""
    ln10_step = steps.ln_n_dex * np.log(10.0)
    n_low, n_high = np.exp(theta[2] - ln10_step), np.exp(theta[2] + ln10_step)
    e_max = np.hypot(abs(theta[3]) + steps.ellipticity, abs(theta[4]) + steps.ellipticity)
    return bool(SERSIC_N_RANGE[0] <= n_low and n_high <= SERSIC_N_RANGE[1] and 1.0 - e_max >= MIN_AXIS_RATIO)


def model_jacobian(theta, stamp_model: StampModel) -> tuple[np.ndarray, np.ndarray]:
    """The noiseless model and its derivatives with respect to each Fisher parameter.

    Parameters
    ----------
    theta : array-like
        Fisher parameters (``FISHER_PARAMETERS`` order).
    stamp_model : StampModel
        Rendering and noise conventions.

    Returns
    -------
    model : numpy.ndarray
        ``(size, size)`` noiseless stamp, electrons/s.
    jacobian : numpy.ndarray
        ``(7, size, size)``: d model / d theta_k (electrons/s per unit of theta_k).
    """
    theta = np.asarray(theta, dtype=float)
    steps = stamp_model.steps
    model = stamp_model.render(theta)
    step_sizes = [
        None,
        steps.ln_re,
        steps.ln_n_dex * np.log(10.0),
        steps.ellipticity,
        steps.ellipticity,
        steps.centre_pix,
        steps.centre_pix,
    ]
    jacobian = np.empty((len(FISHER_PARAMETERS),) + model.shape)
    jacobian[0] = -0.4 * np.log(10.0) * model  # flux = 10**(-0.4 (mag - zp))
    for k, h in enumerate(step_sizes):
        if h is None:
            continue
        up, down = theta.copy(), theta.copy()
        up[k] += h
        down[k] -= h
        jacobian[k] = (stamp_model.render(up) - stamp_model.render(down)) / (2.0 * h)
    return model, jacobian


def fisher_matrix(jacobian: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """``F_ij = sum_pixels J_i J_j / V`` for a ``(P, H, W)`` Jacobian and ``(H, W)`` variance."""
    flat = jacobian.reshape(len(jacobian), -1)
    return (flat / variance.reshape(1, -1)) @ flat.T


def inverse_fisher(fisher: np.ndarray, max_condition: float = MAX_CONDITION) -> np.ndarray | None:
    """The bound ``F^-1``, or None when ``F`` is singular or ill-conditioned.

    The condition number is taken on the correlation form ``D^-1/2 F D^-1/2`` (D the
    diagonal), so it measures degeneracy between parameters, not their units.
    """
    diagonal = np.diag(fisher)
    if not np.all(np.isfinite(fisher)) or np.any(diagonal <= 0):
        return None
    scale = 1.0 / np.sqrt(diagonal)
    correlation = fisher * np.outer(scale, scale)
    eigenvalues = np.linalg.eigvalsh(correlation)
    if eigenvalues[0] <= 0 or eigenvalues[-1] / eigenvalues[0] > max_condition:
        return None
    return np.linalg.inv(correlation) * np.outer(scale, scale)


def catalogue_bounds(theta, covariance: np.ndarray) -> dict[str, float]:
    """Standard deviations of mag, re (arcsec), n and ellipticity from the Fisher-parameter covariance.

    The delta method: ``sigma_re = re sigma_ln_re``, ``sigma_n = n sigma_ln_n``, and
    ``e = hypot(e1, e2)`` with gradient ``(cos 2 PA, sin 2 PA)`` (for a round galaxy,
    the e1 direction).
    """
    mag, ln_re, ln_n, e1, e2 = (float(v) for v in theta[:5])
    e = np.hypot(e1, e2)
    gradient = np.array([e1, e2]) / e if e > 0 else np.array([1.0, 0.0])
    var_e = float(gradient @ covariance[3:5, 3:5] @ gradient)
    return {
        "crb_mag": float(np.sqrt(covariance[0, 0])),
        "crb_re_arcsec": float(np.exp(ln_re) * np.sqrt(covariance[1, 1])),
        "crb_n": float(np.exp(ln_n) * np.sqrt(covariance[2, 2])),
        "crb_ellipticity": float(np.sqrt(var_e)),
        "crb_ln_re": float(np.sqrt(covariance[1, 1])),
        "crb_ln_n": float(np.sqrt(covariance[2, 2])),
    }


NAN_BOUNDS = dict.fromkeys(("crb_mag", "crb_re_arcsec", "crb_n", "crb_ellipticity", "crb_ln_re", "crb_ln_n"), float("nan"))


def galaxy_bound(theta, stamp_model: StampModel) -> tuple[dict[str, float], int]:
    """The Cramér-Rao bounds of one galaxy and its flag (0 when valid).

    Parameters
    ----------
    theta : array-like
        Fisher parameters (:func:`fisher_point`).
    stamp_model : StampModel
        Rendering and noise conventions.

    Returns
    -------
    bounds : dict
        ``crb_mag`` (mag), ``crb_re_arcsec`` (arcsec), ``crb_n``, ``crb_ellipticity``,
        ``crb_ln_re``, ``crb_ln_n`` as standard deviations; NaN when flagged.
    flag : int
        ``AT_BOUND`` (a step would leave the model's range), ``ILL_CONDITIONED``
        (singular or ill-conditioned Fisher matrix, or a bound above ``MAX_BOUND``:
        e.g. an unresolved galaxy's n), ``RENDER_FAILED``, or 0.
    """
    theta = np.asarray(theta, dtype=float)
    if not np.all(np.isfinite(theta)) or not stencil_in_range(theta, stamp_model.steps):
        return dict(NAN_BOUNDS), AT_BOUND
    try:
        model, jacobian = model_jacobian(theta, stamp_model)
    except Exception:  # noqa: BLE001 - GalSim raises several types for unrenderable profiles
        return dict(NAN_BOUNDS), RENDER_FAILED
    covariance = inverse_fisher(fisher_matrix(jacobian, stamp_model.variance(model)))
    if covariance is None:
        return dict(NAN_BOUNDS), ILL_CONDITIONED
    bounds = catalogue_bounds(theta, covariance)
    if any(not bounds[name] <= limit for name, limit in MAX_BOUND.items()):
        return dict(NAN_BOUNDS), ILL_CONDITIONED
    return bounds, 0
