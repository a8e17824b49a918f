"""The exact-model refit: it converges from a network-like start, reaches the truth within its bound, and fails gently."""

from __future__ import annotations

import numpy as np
import pytest

from legato.modelling.bounds import FiniteSteps, StampModel, fisher_point, galaxy_bound
from legato.modelling.refit import NO_FIT, RefitSettings, refit_stamp

ZEROPOINT = 25.9463
SKY_SIGMA = 0.008725
EXPOSURE_TIME = 20000.0
TRUTH = {"mag": 19.6, "re_arcsec": 0.35, "n": 2.5, "ellipticity": 0.4}


def stamp_model(psf) -> StampModel:
    from legato.modelling.renderer import ModelRenderer

    return StampModel(ModelRenderer(psf, 64, 0.06, ZEROPOINT), SKY_SIGMA, EXPOSURE_TIME, FiniteSteps())


def test_refit_from_a_rough_start_lands_within_its_bound_of_the_truth(galsim_psf):
    from legato.simulation.noise import NoiseModel

    model_of = stamp_model(galsim_psf)
    theta = fisher_point(*TRUTH.values(), pa_deg=40.0, x_offset_pix=0.3, y_offset_pix=-0.1)
    image = NoiseModel(sky_sigma=SKY_SIGMA, exposure_time=EXPOSURE_TIME).add_noise(model_of.render(theta), np.random.default_rng(3))
    start = (TRUTH["mag"] + 0.08, TRUTH["re_arcsec"] * 1.15, TRUTH["n"] * 0.8, TRUTH["ellipticity"] - 0.06)
    refit = refit_stamp(image, start, model_of, RefitSettings(max_iterations=8))
    assert refit.flags == 0 and 1 <= refit.iterations <= 8
    assert refit.reduced_chi2 == pytest.approx(1.0, abs=0.1)
    bounds, flag = galaxy_bound(theta, model_of)
    assert flag == 0
    for name, truth in TRUTH.items():
        column = "re_arcsec" if name == "re_arcsec" else name
        # the formal error at the solution is the bound there, close to the bound at the truth
        assert refit.errors[f"{column}_err"] == pytest.approx(bounds[f"crb_{column}"], rel=0.1), name
        # one noise realisation: the solution lies within 4 bounds of the truth, the start did not
        assert abs(refit.estimate[column] - truth) < 4 * bounds[f"crb_{column}"], name
    assert abs(start[0] - TRUTH["mag"]) > 4 * bounds["crb_mag"]
    assert refit.estimate["pa_deg"] == pytest.approx(40.0, abs=3.0)


def test_refit_returns_the_start_flagged_when_there_is_nothing_to_fit(galsim_psf):
    model_of = stamp_model(galsim_psf)
    image = np.zeros((64, 64))
    refit = refit_stamp(image, (np.nan, 0.3, 1.0, 0.2), model_of)
    assert refit.flags == NO_FIT and refit.iterations == 0
    assert np.isnan(refit.errors["mag_err"])
    nan_pixels = np.full((64, 64), np.nan)
    assert refit_stamp(nan_pixels, (20.0, 0.3, 1.0, 0.2), model_of).flags == NO_FIT


def test_errors_widen_on_correlated_noise_only():
    from legato.inference.measurements import correlated_noise_inflation
    from legato.simulation.noise import correlated_noise, correlation_norm

    rng = np.random.default_rng(5)
    no_sources = np.zeros((64, 64), dtype=bool)
    assert correlated_noise_inflation(rng.normal(0.0, 0.01, (64, 64)), no_sources) == 1.0
    smoothed = correlated_noise((64, 64), 0.01, 1.0, rng)
    assert correlated_noise_inflation(smoothed, no_sources) == pytest.approx(1.0 / correlation_norm(1.0), rel=0.2)


def test_blended_stamps_are_refit_only_when_asked(galsim_psf):
    from legato.flags import BLENDED
    from legato.inference.measurements import RefitAugmentation
    from legato.modelling.renderer import ModelRenderer, stamp_geometry
    from legato.simulation.noise import NoiseModel

    model_of = stamp_model(galsim_psf)
    truth = fisher_point(*TRUTH.values(), pa_deg=40.0, x_offset_pix=0.0, y_offset_pix=0.0)
    neighbour = fisher_point(21.0, 0.2, 1.0, 0.1, pa_deg=0.0, x_offset_pix=17.0, y_offset_pix=-15.0)
    scene = model_of.render(truth) + model_of.render(neighbour)
    image = NoiseModel(sky_sigma=SKY_SIGMA, exposure_time=EXPOSURE_TIME).add_noise(scene, np.random.default_rng(4))
    start = (TRUTH["mag"] + 0.1, TRUTH["re_arcsec"] * 1.1, TRUTH["n"] * 0.9, TRUTH["ellipticity"] - 0.05)
    renderer = ModelRenderer(galsim_psf, 64, 0.06, ZEROPOINT)
    args = (image, start, SKY_SIGMA, stamp_geometry(image), BLENDED)
    assert RefitAugmentation(renderer, 21.0, EXPOSURE_TIME).measure(*args) == ({"refit": 0}, False)
    values, flagged = RefitAugmentation(renderer, 21.0, EXPOSURE_TIME, blended=True).measure(*args)
    assert values["refit"] == 1 and not flagged
    # the neighbour's segment is masked: the target's magnitude is its own, not the pair's
    assert values["mag"] == pytest.approx(TRUTH["mag"], abs=0.03) and values["mag_err"] > 0
    assert RefitAugmentation(renderer, 19.0, EXPOSURE_TIME, blended=True).measure(*args) == ({"refit": 0}, False)


def test_a_galaxy_at_the_priors_lowest_n_converges_on_that_limit(galsim_psf):
    from legato.simulation.noise import NoiseModel

    model_of = stamp_model(galsim_psf)
    truth = {"mag": 21.7, "re_arcsec": 0.6, "n": 0.3, "ellipticity": 0.55}
    theta = fisher_point(*truth.values(), pa_deg=-20.0, x_offset_pix=0.2, y_offset_pix=0.1)
    image = NoiseModel(sky_sigma=SKY_SIGMA, exposure_time=EXPOSURE_TIME).add_noise(model_of.render(theta), np.random.default_rng(6))
    refit = refit_stamp(image, (21.72, 0.58, 0.33, 0.56), model_of)
    # the maximum lies on the range's n limit (the simulator's prior, less a stencil margin): kept, not flagged
    assert refit.flags == 0 and refit.estimate["n"] == pytest.approx(0.31, abs=0.005)
    assert 0 < refit.errors["mag_err"] < 0.05 and abs(refit.estimate["mag"] - truth["mag"]) < 4 * refit.errors["mag_err"]
