"""The Imfit single-Sérsic fitter agrees with the simulator on every convention (building block of the GALFIT column)."""

from __future__ import annotations

import numpy as np
import pytest

from legato.classical.fitter import FLAG_BAD_INPUT, FitSettings, fit_stamp, noise_map
from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
from legato.simulation.render import render_sersic_stamp

SETTINGS = FitSettings(pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=ZEROPOINT_AB["F160W"])


@pytest.fixture(scope="module")
def psf_array(raw_data):
    from legato.simulation.psf import read_psf_image

    return read_psf_image(raw_data["psf"]).array


@pytest.mark.parametrize(
    "truth",
    [
        dict(mag=21.0, re_arcsec=0.35, n=2.5, q=0.6, pa_deg=30.0, x_offset_pix=0.3, y_offset_pix=-0.2),
        dict(mag=20.0, re_arcsec=0.6, n=0.7, q=0.9, pa_deg=80.0, x_offset_pix=0.0, y_offset_pix=0.4),
        dict(mag=21.5, re_arcsec=0.3, n=1.0, q=0.35, pa_deg=-50.0, x_offset_pix=-0.3, y_offset_pix=0.2),
    ],
)
def test_high_snr_fit_recovers_the_simulated_parameters(truth, galsim_psf, psf_array):
    image = render_sersic_stamp(**truth, psf=galsim_psf, size=64, pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=SETTINGS.zeropoint)
    sigma = noise_map(image, 1e-4, None)
    noisy = image + np.random.default_rng(0).normal(0.0, 1e-4, image.shape)
    result = fit_stamp(noisy, sigma, psf_array, SETTINGS)
    assert result["flags"] == 0
    assert result["mag"] == pytest.approx(truth["mag"], abs=0.01)
    assert result["re_arcsec"] == pytest.approx(truth["re_arcsec"], rel=0.01)
    assert result["n"] == pytest.approx(truth["n"], rel=0.02)
    assert result["q"] == pytest.approx(truth["q"], abs=0.01)
    assert result["pa_deg"] == pytest.approx(truth["pa_deg"], abs=1.0)
    assert result["x_pix"] == pytest.approx(32 + truth["x_offset_pix"], abs=0.05)


def test_bad_stamps_are_flagged_not_raised(psf_array):
    nan_stamp = np.zeros((64, 64))
    nan_stamp[10, 10] = np.nan
    sigma = np.full((64, 64), 0.01)
    assert fit_stamp(nan_stamp, sigma, psf_array, SETTINGS)["flags"] == FLAG_BAD_INPUT
    blank = fit_stamp(np.zeros((64, 64)), sigma, psf_array, SETTINGS)
    assert blank["flags"] == FLAG_BAD_INPUT and np.isnan(blank["mag"])
