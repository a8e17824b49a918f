"""Single-Sérsic + PSF + flat-sky fit of one stamp with Imfit (Levenberg-Marquardt).

GALFIT-like bounds: 0.2 <= n <= 8, 0.05 <= q <= 1, 0.3 pixel <= re <= stamp
size, centre within 3 pixels of the start. Imfit's conventions match GALFIT's
(PA counter-clockwise from +y, ``ell = 1 - b/a``, ``r_e`` semi-major, 1-based
pixel centres) and it integrates its model over pixels, so it takes the PSF
image sampled without the output-pixel response, as the simulator uses it.

The sky is held at zero for background-subtracted stamps (the simulator's and
the CANDELS blocks' convention), measured on the stamp border and held fixed
(GALAPAGOS style; biased high when the wings of a large, high-n galaxy reach
the border), or fitted as a free flat term. A fit whose reduced chi-square stays above
``retry_chi2`` is restarted from fixed alternative starting points and the best
fit statistic is kept (automatic, no per-galaxy tuning).

A failed or limit-hitting fit is a flag on the result, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from legato.analysis.morphometry import border_background
from legato.analysis.segmentation import segment_stamp
from legato.classical.initial import InitialGuess, initial_guess, sersic_surface_brightness_at_re
from legato.conventions import Q_MIN, SERSIC_N_MAX, SERSIC_N_MIN, flux_to_mag, mag_to_flux
from legato.errors import ConfigError

FLAG_OK = 0
FLAG_BAD_INPUT = 1  # NaN/inf pixels or an empty stamp: no fit attempted
FLAG_FIT_ERROR = 2  # Imfit raised or returned non-finite parameters
FLAG_NOT_CONVERGED = 4  # the solver stopped without convergence
FLAG_AT_LIMIT = 8  # n, q or re ended on a bound (GALFIT's "*")
FLAG_POOR_FIT = 16  # reduced chi-square above retry_chi2 from every start (e.g. an unresolved source)
FLAG_NAMES = {1: "bad_input", 2: "fit_error", 4: "not_converged", 8: "at_limit", 16: "poor_fit"}

CENTRE_BOX_PIX = 3.0
RE_MIN_PIX = 0.3
SKY_MODES = ("zero", "border", "masked", "free")
# alternative starts (Sérsic index, radius as a fraction of the moments radius) tried after a poor fit
RETRY_STARTS = ((4.0, 0.5), (1.0, 1.0), (0.5, 1.5))


@dataclass(frozen=True)
class FitSettings:
    """Fixed settings of a classical fit.

    Attributes
    ----------
    pixel_scale : float
        Arcsec per pixel.
    zeropoint : float
        AB zeropoint of the stamps (electrons/s).
    solver : str
        Imfit solver (``LM`` Levenberg-Marquardt, ``NM`` Nelder-Mead).
    sky : str
        ``zero``: the stamp is background-subtracted, sky held at 0;
        ``border``: median of the stamp border, subtracted and held fixed;
        ``masked``: a local sky correction from the pixels far from every detected source
        (photutils segmentation; see :func:`fixed_sky`), subtracted and held fixed;
        ``free``: a flat sky term fitted with the galaxy.
    retry_chi2 : float
        Reduced chi-square above which the fit is restarted from ``RETRY_STARTS``.
    psf_size : int
        Side (pixels, odd) to which the unit-sum PSF is cropped for the fit.
    mask_neighbours : bool
        Mask other sources found by photutils detection and deblending (:func:`legato.analysis.segmentation.segment_stamp`) before fitting.
    start_n : float or None
        Fixed starting Sérsic index instead of the moments estimate (an alternative initialisation).
    """

    pixel_scale: float
    zeropoint: float
    solver: str = "LM"
    sky: str = "zero"
    retry_chi2: float = 1.5
    psf_size: int = 41
    mask_neighbours: bool = False
    start_n: float | None = None

    def __post_init__(self):
        if self.sky not in SKY_MODES:
            raise ConfigError(f"sky must be one of {SKY_MODES}, got {self.sky!r}")
        if self.solver not in ("LM", "NM", "DE"):
            raise ConfigError(f"solver must be LM, NM or DE, got {self.solver!r}")
        if self.psf_size < 3 or self.psf_size % 2 == 0:
            raise ConfigError(f"psf_size must be an odd number >= 3, got {self.psf_size}")
        if not self.retry_chi2 > 0:
            raise ConfigError(f"retry_chi2 must be > 0, got {self.retry_chi2}")
        if self.start_n is not None and not SERSIC_N_MIN <= self.start_n <= SERSIC_N_MAX:
            raise ConfigError(f"start_n must be within [{SERSIC_N_MIN}, {SERSIC_N_MAX}], got {self.start_n}")

    @classmethod
    def from_params(cls, section: dict, pixel_scale: float, zeropoint: float) -> FitSettings:
        """Settings from the ``classical`` section of params.yaml (unknown keys are ignored)."""
        kinds = {"solver": str, "sky": str, "retry_chi2": float, "psf_size": int, "mask_neighbours": bool, "start_n": float}
        try:
            values = {k: kind(section[k]) for k, kind in kinds.items() if section.get(k) is not None}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad classical setting: {exc}") from None
        return cls(pixel_scale=pixel_scale, zeropoint=zeropoint, **values)


def fitting_psf(psf: np.ndarray, size: int) -> np.ndarray:
    """The PSF normalised to unit total flux, then cropped to ``size`` x ``size`` around its centre.

    The crop keeps its (slightly below one) sum and the fit runs without
    renormalisation, so the light in the cut wings is not pushed into the core
    and the fitted total magnitude stays unbiased, while the convolution is
    about 1.6x faster than with a 51-pixel PSF.
    """
    psf = np.asarray(psf, dtype=np.float64)
    psf = psf / psf.sum()
    ny, nx = psf.shape
    half = min(size, ny, nx) // 2
    cy, cx = ny // 2, nx // 2
    return np.ascontiguousarray(psf[cy - half : cy + half + 1, cx - half : cx + half + 1])


def noise_map(image: np.ndarray, sky_sigma: float, exposure_time: float | None) -> np.ndarray:
    """Per-pixel sigma (electrons/s): sky plus source Poisson when the exposure time is known."""
    variance = np.full(image.shape, sky_sigma**2)
    if exposure_time:
        variance = variance + np.clip(image, 0.0, None) / exposure_time
    return np.sqrt(variance)


def _model_description(image: np.ndarray, guess: InitialGuess, noise_sigma: float, fit_sky: bool):
    import pyimfit

    ny, nx = image.shape
    i_e = sersic_surface_brightness_at_re(guess.flux, guess.re_pix, guess.n, guess.q)
    description = pyimfit.SimpleModelDescription()
    x0, y0 = guess.x + 1.0, guess.y + 1.0  # Imfit pixel centres are 1-based
    description.x0.setValue(x0, [x0 - CENTRE_BOX_PIX, x0 + CENTRE_BOX_PIX])
    description.y0.setValue(y0, [y0 - CENTRE_BOX_PIX, y0 + CENTRE_BOX_PIX])
    sersic = pyimfit.make_imfit_function("Sersic", label="galaxy")
    sersic.PA.setValue(guess.pa_deg, [guess.pa_deg - 180.0, guess.pa_deg + 180.0])
    sersic.ell.setValue(min(1.0 - guess.q, 0.9), [0.0, 1.0 - Q_MIN])
    sersic.n.setValue(guess.n, [SERSIC_N_MIN, SERSIC_N_MAX])
    sersic.I_e.setValue(i_e, [0.0, 1e3 * max(i_e, 1e-6)])
    sersic.r_e.setValue(guess.re_pix, [RE_MIN_PIX, float(max(nx, ny))])
    description.addFunction(sersic)
    if fit_sky:
        sky = pyimfit.make_imfit_function("FlatSky", label="sky")
        sky.I_sky.setValue(0.0, [-10.0 * noise_sigma - 1e-6, 10.0 * noise_sigma + 1e-6])
        description.addFunction(sky)
    return description


def sersic_log_flux_slope(n: float, step: float = 1e-4) -> float:
    """d ln(total flux) / dn of a Sérsic profile at fixed I_e and r_e (Ciotti & Bertin 1999 b_n)."""
    from scipy.special import gammaln

    def log_flux(index):
        b = 2 * index - 1 / 3 + 4 / (405 * index) + 46 / (25515 * index**2)
        return np.log(index) + b + gammaln(2 * index) - 2 * index * np.log(b)

    return float((log_flux(n + step) - log_flux(n - step)) / (2 * step))


def formal_errors(fitter, params: np.ndarray, pixel_scale: float) -> dict:
    """The fitter's formal 1-sigma errors of mag, re_arcsec, n and ellipticity (NaN when unavailable).

    Imfit's Levenberg-Marquardt errors are the diagonal of the covariance: the
    magnitude error propagates the I_e, r_e, n and ellipticity errors as if they
    were independent (the covariances are not available), as a GALFIT user would.
    """
    try:
        err = np.asarray(fitter.getParameterErrors(), dtype=float)
    except Exception:  # noqa: BLE001 - solvers other than LM have no errors
        err = np.full(len(params), np.nan)
    if len(err) < 7:
        err = np.full(len(params), np.nan)
    _, _, _, ell, n, i_e, re_pix = params[:7]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_flux_error = np.sqrt(
            (err[5] / i_e) ** 2 + (2 * err[6] / re_pix) ** 2 + (err[3] / (1 - ell)) ** 2 + (sersic_log_flux_slope(n) * err[4]) ** 2
        )
    return {
        "mag_err": float(2.5 / np.log(10) * log_flux_error),
        "re_arcsec_err": float(err[6] * pixel_scale),
        "n_err": float(err[4]),
        "ellipticity_err": float(err[3]),
    }


def empty_result(flag: int) -> dict:
    """A result row for a stamp that could not be fitted."""
    return {
        "mag_err": np.nan,
        "re_arcsec_err": np.nan,
        "n_err": np.nan,
        "ellipticity_err": np.nan,
        "mag": np.nan,
        "re_arcsec": np.nan,
        "n": np.nan,
        "q": np.nan,
        "ellipticity": np.nan,
        "pa_deg": np.nan,
        "x_pix": np.nan,
        "y_pix": np.nan,
        "sky": np.nan,
        "reduced_chi2": np.nan,
        "n_evaluations": 0,
        "n_starts": 0,
        "flags": flag,
    }


def _fit_from(image, sigma, psf, settings: FitSettings, guess: InitialGuess, mask=None):
    """One Imfit run from ``guess``; the fitted Imfit object, or None when it failed."""
    import pyimfit

    description = _model_description(image, guess, float(np.median(sigma)), settings.sky == "free")
    fitter = pyimfit.Imfit(description, psf=psf, psfNormalization=False, maxThreads=1, zeroPoint=settings.zeropoint)
    try:
        fitter.fit(image, error=sigma, mask=mask, solver=settings.solver)
        params = np.asarray(fitter.getRawParameters(), dtype=float)
        flux = float(fitter.getModelFluxes()[1][0])
    except Exception:  # noqa: BLE001 - a diverging fit is a flag, not a crash of the whole set
        return None
    if not np.all(np.isfinite(params)) or not flux > 0 or not np.isfinite(fitter.reducedFitStatistic):
        return None
    return fitter


def network_guess(moments: InitialGuess, estimate, settings: FitSettings) -> InitialGuess:
    """Start from a network's estimate (mag, re_arcsec, n, ellipticity): the moments keep the centre and angle.

    The networks estimate neither centre nor position angle; the moments measure both
    well. Values are clipped into the fitter's parameter limits.
    """
    mag, re_arcsec, n, ellipticity = (float(v) for v in estimate)
    return replace(
        moments,
        flux=float(mag_to_flux(mag, settings.zeropoint)),
        re_pix=float(max(re_arcsec / settings.pixel_scale, 2 * RE_MIN_PIX)),
        n=float(np.clip(n, SERSIC_N_MIN, SERSIC_N_MAX)),
        q=float(np.clip(1.0 - ellipticity, Q_MIN, 1.0)),
    )


SKY_GROW_PIX = 4  # the masked sky leaves out pixels this far beyond each source's segment (its faint wings)
SKY_TARGET_RADII = (
    3.0  # ... and every pixel within this many target-segment radii of the centre (a galaxy's wings reach far beyond its isophote)
)
SKY_MIN_PIXELS = 1000  # fewer sky pixels left: no local correction, the survey's global background stands (sky 0)
SKY_SIGNIFICANCE = 3.0  # a local correction smaller than this many standard errors is not measured: the global background stands


def fixed_sky(image: np.ndarray, mode: str, segmentation=None) -> float:
    """The sky level (electrons/s) held fixed in the fit.

    ``zero`` and ``free``: 0 (a free sky is fitted, not fixed). ``border``: the
    median of the stamp border. ``masked``: a local correction to the survey's
    global background, as local-sky pipelines make it: the sigma-clipped median
    of the pixels outside every photutils segment (grown ``SKY_GROW_PIX``) and
    farther than ``SKY_TARGET_RADII`` times the target segment's radius
    (``sqrt(area / pi)``) from the centre; 0 when fewer than ``SKY_MIN_PIXELS``
    such pixels remain (an extended galaxy leaves no sky on its stamp, and its
    own wings would bias any estimate up) or when the correction is below
    ``SKY_SIGNIFICANCE`` standard errors (:func:`sky_standard_error`): a
    correction the stamp cannot measure is not applied.
    """
    if mode == "border":
        return border_background(image)
    if mode != "masked":
        return 0.0
    from astropy.stats import sigma_clipped_stats
    from scipy.ndimage import binary_dilation

    sources = binary_dilation(segmentation.source_mask, iterations=SKY_GROW_PIX)
    if segmentation.target:
        radius = SKY_TARGET_RADII * np.sqrt(np.sum(segmentation.labels == segmentation.target) / np.pi)
        yy, xx = np.indices(image.shape)
        sources |= np.hypot(yy - image.shape[0] // 2, xx - image.shape[1] // 2) < radius
    sky_pixels = image[~sources & np.isfinite(image)]
    if sky_pixels.size < SKY_MIN_PIXELS:
        return 0.0
    level = float(sigma_clipped_stats(sky_pixels, sigma=3.0)[1])
    return level if abs(level) >= SKY_SIGNIFICANCE * sky_standard_error(image, sources) else 0.0


def sky_standard_error(image: np.ndarray, sources: np.ndarray) -> float:
    """Standard error (electrons/s) of the mean of the sky pixels, inflated for the noise correlation.

    Correlated noise averages down more slowly than white noise: the effective
    number of independent pixels is ``N * norm**2``, where ``norm`` is the standard
    deviation of unit white noise after the Gaussian kernel whose neighbour-pixel
    correlation is the measured one (:mod:`legato.analysis.noise_texture`).
    """
    from legato.analysis.noise_texture import kernel_sigma_for_measured_correlation, noise_statistics
    from legato.simulation.noise import correlation_norm

    stats = noise_statistics(image, sources)
    norm = correlation_norm(kernel_sigma_for_measured_correlation(stats.correlation[1]))
    return float(stats.sigma / (norm * np.sqrt(max(stats.n_pixels, 1))))


def fit_stamp(image: np.ndarray, sigma: np.ndarray, psf: np.ndarray, settings: FitSettings, start_estimate=None) -> dict:
    """Fit one stamp.

    Parameters
    ----------
    image : numpy.ndarray
        Stamp, electrons/s (the sky is handled as ``settings.sky`` says).
    sigma : numpy.ndarray
        Per-pixel noise, electrons/s.
    psf : numpy.ndarray
        PSF image sampled without the output-pixel response, as returned by
        :func:`fitting_psf` (unit total flux before cropping; not renormalised).
    settings : FitSettings
        Pixel scale, zeropoint, solver, sky treatment, restarts.
    start_estimate : sequence of float, optional
        A network's (mag, re_arcsec, n, ellipticity) to start from instead of the
        moments (:func:`network_guess`); ignored when not all finite (moments start).

    Returns
    -------
    dict
        ``mag`` (AB), ``re_arcsec`` (semi-major), ``n``, ``q``, ``ellipticity``,
        ``pa_deg``, ``x_pix``/``y_pix`` (0-based), ``sky`` (electrons/s),
        ``reduced_chi2``, ``n_evaluations``, ``n_starts`` and ``flags`` (bit
        mask, see ``FLAG_NAMES``).
    """
    image = np.asarray(image, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2 or not np.all(np.isfinite(image)) or not np.all(np.isfinite(sigma)) or not np.any(image):
        return empty_result(FLAG_BAD_INPUT)
    segmentation = segment_stamp(image, float(np.min(sigma))) if settings.mask_neighbours or settings.sky == "masked" else None
    sky = fixed_sky(image, settings.sky, segmentation)
    image = image - sky
    mask = segmentation.neighbour_mask if settings.mask_neighbours else None
    try:
        guess = initial_guess(image if mask is None else np.where(mask, 0.0, image), float(np.median(sigma)))
    except Exception:  # noqa: BLE001 - a stamp the moments cannot describe is a failed fit
        return empty_result(FLAG_FIT_ERROR)
    if start_estimate is not None and np.all(np.isfinite(start_estimate)):
        guess = network_guess(guess, start_estimate, settings)
    if settings.start_n is not None:
        guess = replace(guess, n=settings.start_n)
    best, evaluations, starts = None, 0, 0
    for n_start, re_factor in ((guess.n, 1.0), *RETRY_STARTS):
        start = replace(guess, n=n_start, re_pix=max(guess.re_pix * re_factor, 2 * RE_MIN_PIX))
        fitter = _fit_from(image, sigma, psf, settings, start, mask)
        starts += 1
        if fitter is not None:
            evaluations += int(fitter.nFuncEvals)
            if best is None or fitter.fitStatistic < best.fitStatistic:
                best = fitter
        if best is not None and best.reducedFitStatistic <= settings.retry_chi2:
            break
    if best is None:
        return {**empty_result(FLAG_FIT_ERROR), "n_evaluations": evaluations, "n_starts": starts}
    return _result(best, sky, settings, evaluations, starts)


def _result(fitter, sky: float, settings: FitSettings, evaluations: int, starts: int) -> dict:
    params = np.asarray(fitter.getRawParameters(), dtype=float)
    limits = fitter.getParameterLimits()
    x0, y0, pa, ell, n, _, re_pix = params[:7]
    flags = FLAG_OK if fitter.fitConverged else FLAG_NOT_CONVERGED
    if fitter.reducedFitStatistic > settings.retry_chi2:
        flags |= FLAG_POOR_FIT
    for index in (3, 4, 6):  # ell, n, r_e
        low, high = limits[index]
        if min(abs(params[index] - low), abs(params[index] - high)) < 1e-3 * (high - low):
            flags |= FLAG_AT_LIMIT
    return {
        **formal_errors(fitter, params, settings.pixel_scale),
        "mag": float(flux_to_mag(float(fitter.getModelFluxes()[1][0]), settings.zeropoint)),
        "re_arcsec": float(re_pix * settings.pixel_scale),
        "n": float(n),
        "q": float(1.0 - ell),
        "ellipticity": float(ell),
        "pa_deg": float((pa + 90.0) % 180.0 - 90.0),
        "x_pix": float(x0 - 1.0),
        "y_pix": float(y0 - 1.0),
        "sky": float(sky + (params[7] if len(params) > 7 else 0.0)),
        "reduced_chi2": float(fitter.reducedFitStatistic),
        "n_evaluations": evaluations,
        "n_starts": starts,
        "flags": int(flags),
    }
