"""Single-Sérsic + PSF + flat-sky fit of one stamp with Imfit (Levenberg-Marquardt).

GALFIT-like bounds: 0.2 <= n <= 8, 0.05 <= q <= 1, 0.3 pixel <= re <= stamp
size, centre within 3 pixels of the start. Imfit's conventions match GALFIT's
(PA counter-clockwise from +y, ``ell = 1 - b/a``, ``r_e`` semi-major, 1-based
pixel centres) and it integrates its model over pixels, so it takes the PSF
image sampled without the output-pixel response, as the simulator uses it.

A failed or limit-hitting fit is a flag on the result, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legato.classical.initial import initial_guess, sersic_surface_brightness_at_re
from legato.conventions import SERSIC_N_MAX, SERSIC_N_MIN, Q_MIN, flux_to_mag

FLAG_OK = 0
FLAG_BAD_INPUT = 1  # NaN/inf pixels or an empty stamp: no fit attempted
FLAG_FIT_ERROR = 2  # Imfit raised or returned non-finite parameters
FLAG_NOT_CONVERGED = 4  # the solver stopped without convergence
FLAG_AT_LIMIT = 8  # n, q or re ended on a bound (GALFIT's "*")
FLAG_NAMES = {1: "bad_input", 2: "fit_error", 4: "not_converged", 8: "at_limit"}

CENTRE_BOX_PIX = 3.0
RE_MIN_PIX = 0.3


@dataclass(frozen=True)
class FitSettings:
    """Fixed settings of a classical fit."""

    pixel_scale: float
    zeropoint: float
    solver: str = "LM"
    fit_sky: bool = True


def noise_map(image: np.ndarray, sky_sigma: float, exposure_time: float | None) -> np.ndarray:
    """Per-pixel sigma (electrons/s): sky plus source Poisson when the exposure time is known."""
    variance = np.full(image.shape, sky_sigma**2)
    if exposure_time:
        variance = variance + np.clip(image, 0.0, None) / exposure_time
    return np.sqrt(variance)


def _model_description(image: np.ndarray, noise_sigma: float, fit_sky: bool):
    import pyimfit

    guess = initial_guess(image, noise_sigma)
    ny, nx = image.shape
    n = guess.n
    i_e = sersic_surface_brightness_at_re(guess.flux, guess.re_pix, n, guess.q)
    description = pyimfit.SimpleModelDescription()
    x0, y0 = guess.x + 1.0, guess.y + 1.0  # Imfit pixel centres are 1-based
    description.x0.setValue(x0, [x0 - CENTRE_BOX_PIX, x0 + CENTRE_BOX_PIX])
    description.y0.setValue(y0, [y0 - CENTRE_BOX_PIX, y0 + CENTRE_BOX_PIX])
    sersic = pyimfit.make_imfit_function("Sersic", label="galaxy")
    sersic.PA.setValue(guess.pa_deg, [guess.pa_deg - 180.0, guess.pa_deg + 180.0])
    sersic.ell.setValue(min(1.0 - guess.q, 0.9), [0.0, 1.0 - Q_MIN])
    sersic.n.setValue(n, [SERSIC_N_MIN, SERSIC_N_MAX])
    sersic.I_e.setValue(i_e, [0.0, 1e3 * max(i_e, 1e-6)])
    sersic.r_e.setValue(guess.re_pix, [RE_MIN_PIX, float(max(nx, ny))])
    description.addFunction(sersic)
    if fit_sky:
        sky = pyimfit.make_imfit_function("FlatSky", label="sky")
        sky.I_sky.setValue(0.0, [-10.0 * noise_sigma - 1e-6, 10.0 * noise_sigma + 1e-6])
        description.addFunction(sky)
    return description


def empty_result(flag: int) -> dict:
    """A result row for a stamp that could not be fitted."""
    return {
        "mag": np.nan, "re_arcsec": np.nan, "n": np.nan, "q": np.nan, "ellipticity": np.nan, "pa_deg": np.nan,
        "x_pix": np.nan, "y_pix": np.nan, "sky": np.nan, "reduced_chi2": np.nan, "n_evaluations": 0, "flags": flag,
    }


def fit_stamp(image: np.ndarray, sigma: np.ndarray, psf: np.ndarray, settings: FitSettings) -> dict:
    """Fit one stamp.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted stamp, electrons/s.
    sigma : numpy.ndarray
        Per-pixel noise, electrons/s.
    psf : numpy.ndarray
        PSF image sampled without the output-pixel response (normalised by Imfit).
    settings : FitSettings
        Pixel scale, zeropoint, solver.

    Returns
    -------
    dict
        ``mag`` (AB), ``re_arcsec`` (semi-major), ``n``, ``q``, ``ellipticity``,
        ``pa_deg``, ``x_pix``/``y_pix`` (0-based), ``sky``, ``reduced_chi2``,
        ``n_evaluations`` and ``flags`` (bit mask, see ``FLAG_NAMES``).
    """
    import pyimfit

    image = np.asarray(image, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if image.ndim != 2 or not np.all(np.isfinite(image)) or not np.all(np.isfinite(sigma)) or not np.any(image):
        return empty_result(FLAG_BAD_INPUT)
    try:
        description = _model_description(image, float(np.median(sigma)), settings.fit_sky)
        fitter = pyimfit.Imfit(description, psf=np.asarray(psf, dtype=np.float64), maxThreads=1, zeroPoint=settings.zeropoint)
        fitter.fit(image, error=sigma, solver=settings.solver)
        params = np.asarray(fitter.getRawParameters(), dtype=float)
        total_flux = float(fitter.getModelFluxes()[1][0])
        limits = fitter.getParameterLimits()
    except Exception:  # noqa: BLE001 - a diverging fit is a flag, not a crash of the whole set
        return empty_result(FLAG_FIT_ERROR)
    if not np.all(np.isfinite(params)) or total_flux <= 0:
        return empty_result(FLAG_FIT_ERROR)
    x0, y0, pa, ell, n, _, re_pix = params[:7]
    flags = FLAG_OK if fitter.fitConverged else FLAG_NOT_CONVERGED
    for index in (3, 4, 6):  # ell, n, r_e
        low, high = limits[index]
        span = high - low
        if min(abs(params[index] - low), abs(params[index] - high)) < 1e-3 * span:
            flags |= FLAG_AT_LIMIT
    q = 1.0 - ell
    return {
        "mag": float(flux_to_mag(total_flux, settings.zeropoint)),
        "re_arcsec": float(re_pix * settings.pixel_scale),
        "n": float(n),
        "q": float(q),
        "ellipticity": float(ell),
        "pa_deg": float((pa + 90.0) % 180.0 - 90.0),
        "x_pix": float(x0 - 1.0),
        "y_pix": float(y0 - 1.0),
        "sky": float(params[7]) if len(params) > 7 else 0.0,
        "reduced_chi2": float(fitter.reducedFitStatistic),
        "n_evaluations": int(fitter.nFuncEvals),
        "flags": int(flags),
    }
