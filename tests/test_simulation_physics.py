"""Physics of the simulator: flux, radius, axis ratio, noise and S/N follow the conventions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from legato.analysis.morphometry import elliptical_half_light_radius, second_moment_axis_ratio
from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB, mag_to_flux
from legato.simulation.noise import NoiseModel
from legato.simulation.render import render_sersic_stamp

ZP = ZEROPOINT_AB["F160W"]


def render(psf, size=256, pixel_scale=PIXEL_SCALE_ARCSEC, **params):
    defaults = dict(mag=21.0, re_arcsec=0.4, n=1.0, q=0.6, pa_deg=30.0, x_offset_pix=0.0, y_offset_pix=0.0)
    defaults.update(params)
    return render_sersic_stamp(**defaults, psf=psf, size=size, pixel_scale=pixel_scale, zeropoint=ZP)


@pytest.mark.parametrize("n", [0.5, 1.0, 2.5, 4.0])
@pytest.mark.parametrize("mag", [19.0, 23.0])
def test_flux_of_noiseless_large_stamp_matches_magnitude(galsim_psf, n, mag):
    image = render(galsim_psf, mag=mag, n=n, re_arcsec=0.3, x_offset_pix=0.3, y_offset_pix=-0.2)
    expected = 10 ** (-0.4 * (mag - ZP))
    assert image.sum() == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(("n", "re_arcsec", "q", "pa_deg"), [(1.0, 0.6, 0.5, 30.0), (2.5, 0.5, 0.7, -60.0), (0.5, 0.4, 0.3, 75.0)])
def test_semi_major_half_light_radius_of_psf_free_render(n, re_arcsec, q, pa_deg):
    # rendered at 0.02"/pixel so the curve of growth resolves the minor axis (0.12" for q = 0.3)
    scale = 0.02
    image = render(None, size=600, pixel_scale=scale, n=n, re_arcsec=re_arcsec, q=q, pa_deg=pa_deg)
    total = float(mag_to_flux(21.0, ZP))
    measured = elliptical_half_light_radius(image, q, pa_deg, total_flux=total) * scale
    assert measured == pytest.approx(re_arcsec, rel=0.02)


@pytest.mark.parametrize(("q", "pa_deg"), [(0.3, 20.0), (0.6, -45.0), (0.85, 80.0)])
def test_second_moment_axis_ratio_of_noiseless_exponential(q, pa_deg):
    image = render(None, size=200, n=1.0, re_arcsec=0.4, q=q, pa_deg=pa_deg)
    measured_q, measured_pa = second_moment_axis_ratio(image)
    assert measured_q == pytest.approx(q, abs=0.01)
    assert measured_pa == pytest.approx(pa_deg, abs=1.0)


def test_sky_noise_level_matches_configuration():
    noise = NoiseModel(sky_sigma=0.0087, exposure_time=20000.0)
    rng = np.random.default_rng(1)
    empty = noise.add_noise(np.zeros((200, 200)), rng)
    assert empty.dtype == np.float32
    assert float(np.mean(empty)) == pytest.approx(0.0, abs=3 * noise.sky_sigma / 200)
    assert float(np.std(empty)) == pytest.approx(noise.sky_sigma, rel=0.02)


def test_source_poisson_noise_adds_to_the_sky_variance():
    noise = NoiseModel(sky_sigma=0.01, exposure_time=2000.0)
    level = 0.5  # electrons/s per pixel: source variance 2.5e-4 vs sky 1e-4
    flat = np.full((300, 300), level)
    noisy = noise.add_noise(flat, np.random.default_rng(2))
    assert float(np.var(noisy)) == pytest.approx(noise.sky_sigma**2 + level / noise.exposure_time, rel=0.03)
    assert float(np.mean(noisy)) == pytest.approx(level, abs=1e-3)


def test_simulated_snr_follows_the_catalogue_relation(sim_config, cpu_workers, tmp_path):
    from legato.io.stamps import read_stamp_set
    from legato.simulation.calibration import MAG_BIN_EDGES, binned_median, catalog_snr_relation
    from legato.simulation.simulate import simulate

    space = replace(sim_config.space, mag_min=20.0, mag_max=24.5)
    config = replace(sim_config, space=space, sizes={"train": 0, "val": 0, "test": 500}, seed=11)
    simulate(config, tmp_path / "sim", workers=cpu_workers, progress=False)
    _, labels, _ = read_stamp_set(tmp_path / "sim" / "test")
    simulated = binned_median(labels["mag"], labels["snr"])
    catalog = catalog_snr_relation(config)
    ratio = simulated / catalog
    assert len(ratio) == len(MAG_BIN_EDGES) - 1
    assert np.all(np.abs(ratio - 1.0) < 0.20), f"simulated / catalogue median S/N per bin: {np.round(ratio, 3)}"
