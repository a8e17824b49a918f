"""The Imfit single-Sérsic fitter agrees with the simulator on every convention (building block of the GALFIT column)."""

from __future__ import annotations

import numpy as np
import pytest

from legato.classical.fitter import FLAG_BAD_INPUT, FLAG_POOR_FIT, FitSettings, fit_stamp, fitting_psf, noise_map
from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
from legato.errors import ConfigError
from legato.simulation.render import render_sersic_stamp

SETTINGS = FitSettings(pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=ZEROPOINT_AB["F160W"])
NO_RESTART = FitSettings(pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=ZEROPOINT_AB["F160W"], retry_chi2=1e9)


@pytest.fixture(scope="module")
def psf_array(raw_data):
    from legato.simulation.psf import read_psf_image

    return fitting_psf(read_psf_image(raw_data["psf"]).array, SETTINGS.psf_size)


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
    result = fit_stamp(noisy, sigma, psf_array, NO_RESTART)
    assert result["flags"] & ~FLAG_POOR_FIT == 0  # at S/N ~ 1e4 tiny rendering differences raise chi2
    assert result["mag"] == pytest.approx(truth["mag"], abs=0.01)
    assert result["re_arcsec"] == pytest.approx(truth["re_arcsec"], rel=0.01)
    assert result["n"] == pytest.approx(truth["n"], rel=0.02)
    assert result["q"] == pytest.approx(truth["q"], abs=0.01)
    assert result["pa_deg"] == pytest.approx(truth["pa_deg"], abs=1.0)
    assert result["x_pix"] == pytest.approx(32 + truth["x_offset_pix"], abs=0.05)


def test_compact_de_vaucouleurs_profile_keeps_a_small_known_n_bias(galsim_psf, psf_array):
    """n = 4 with a minor-axis radius near one pixel: Imfit's centre subsampling and GalSim's exact
    rendering differ by a few per cent in n at S/N ~ 1e4 (negligible against survey noise)."""
    truth = dict(mag=20.5, re_arcsec=0.25, n=4.0, q=0.3, pa_deg=10.0, x_offset_pix=0.1, y_offset_pix=0.1)
    image = render_sersic_stamp(**truth, psf=galsim_psf, size=64, pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=SETTINGS.zeropoint)
    result = fit_stamp(image, noise_map(image, 1e-4, None), psf_array, NO_RESTART)
    assert result["mag"] == pytest.approx(truth["mag"], abs=0.01)
    assert result["re_arcsec"] == pytest.approx(truth["re_arcsec"], rel=0.02)
    assert result["q"] == pytest.approx(truth["q"], abs=0.015)
    assert result["n"] == pytest.approx(truth["n"], rel=0.06)


def test_restarts_keep_the_best_start_and_sky_modes_are_validated(psf_array, galsim_psf):
    truth = dict(mag=22.0, re_arcsec=0.4, n=1.5, q=0.7, pa_deg=0.0, x_offset_pix=0.0, y_offset_pix=0.0)
    image = render_sersic_stamp(**truth, psf=galsim_psf, size=64, pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=SETTINGS.zeropoint)
    sigma = noise_map(image, 0.008725, None)
    noisy = image + np.random.default_rng(1).normal(0.0, 0.008725, image.shape)
    once = fit_stamp(noisy, sigma, psf_array, SETTINGS)
    forced = fit_stamp(noisy, sigma, psf_array, FitSettings(pixel_scale=0.06, zeropoint=SETTINGS.zeropoint, retry_chi2=1e-3))
    assert once["n_starts"] == 1 and forced["n_starts"] == 4
    assert forced["flags"] & FLAG_POOR_FIT and forced["reduced_chi2"] <= once["reduced_chi2"] + 1e-6
    free = fit_stamp(noisy + 0.01, sigma, psf_array, FitSettings(pixel_scale=0.06, zeropoint=SETTINGS.zeropoint, sky="free"))
    assert free["sky"] == pytest.approx(0.01, abs=0.002) and free["mag"] == pytest.approx(truth["mag"], abs=0.1)
    border = fit_stamp(noisy + 0.01, sigma, psf_array, FitSettings(pixel_scale=0.06, zeropoint=SETTINGS.zeropoint, sky="border"))
    assert border["sky"] == pytest.approx(0.01, abs=0.003)
    with pytest.raises(ConfigError, match="sky must be one of"):
        FitSettings(pixel_scale=0.06, zeropoint=25.0, sky="median")


def test_bad_stamps_are_flagged_not_raised(psf_array):
    nan_stamp = np.zeros((64, 64))
    nan_stamp[10, 10] = np.nan
    sigma = np.full((64, 64), 0.01)
    assert fit_stamp(nan_stamp, sigma, psf_array, SETTINGS)["flags"] == FLAG_BAD_INPUT
    blank = fit_stamp(np.zeros((64, 64)), sigma, psf_array, SETTINGS)
    assert blank["flags"] == FLAG_BAD_INPUT and np.isnan(blank["mag"])


def test_stamp_set_fit_is_chunked_resumable_and_flags_corrupt_stamps(tiny_sim, raw_data, tmp_path):
    from astropy.table import Table

    from legato.classical.run import fit_stamp_set, run_fingerprint
    from legato.io.stamps import read_stamp_set

    stamps, labels, _ = read_stamp_set(tiny_sim / "test")
    out = tmp_path / "fits.fits"
    # a previous, interrupted run left the first block behind: it is reused, not refitted
    first = fit_stamp_set(tiny_sim / "test", out, raw_data["psf"], SETTINGS, workers=1, block_size=4, max_stamps=4, progress=False)
    assert first["fitted"] == 4 and not out.with_name(out.name + ".parts").exists()
    reused = fit_stamp_set(tiny_sim / "test", out, raw_data["psf"], SETTINGS, workers=1, block_size=4, max_stamps=4, progress=False)
    assert reused["reused"] and reused["fits_per_second"] == first["fits_per_second"]  # the speed of the fit that made it
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    Table.read(out).write(parts / "part_00000.fits")
    (parts / "fingerprint.txt").write_text("a fit of other data")
    out.unlink()
    assert (
        fit_stamp_set(tiny_sim / "test", out, raw_data["psf"], SETTINGS, workers=1, block_size=4, max_stamps=4, progress=False)[
            "resumed_blocks"
        ]
        == 0
    )
    parts.mkdir()
    Table.read(out).write(parts / "part_00000.fits")
    (parts / "fingerprint.txt").write_text(run_fingerprint(tiny_sim / "test", raw_data["psf"], SETTINGS, 4))
    summary = fit_stamp_set(tiny_sim / "test", out, raw_data["psf"], SETTINGS, workers=2, block_size=4, max_stamps=8, progress=False)
    assert summary["resumed_blocks"] == 1
    catalogue = Table.read(out)
    assert list(catalogue["id"]) == list(labels["id"][:8])
    assert catalogue["re_arcsec"].unit == "arcsec" and catalogue["mag"].unit == "mag"
    bright = (catalogue["flags"] == 0) & (np.asarray(labels["mag"][:8]) < 23)
    assert np.all(np.abs(catalogue["mag"][bright] - labels["mag"][:8][bright]) < 0.3)
    # a finished catalogue of the same data and settings is not fitted again
    written = out.stat().st_mtime_ns
    again = fit_stamp_set(tiny_sim / "test", out, raw_data["psf"], SETTINGS, workers=1, block_size=4, max_stamps=8, progress=False)
    assert again["fitted"] == 8 and again["reused"] and out.stat().st_mtime_ns == written
    # a resumed fit has no one wall time; the per-worker rate comes from each fit's own seconds
    assert again["fits_per_second"] is None and again["fits_per_second_per_worker"] > 0


def test_corrupt_stamp_in_a_set_is_a_flagged_row(tmp_path, raw_data, tiny_sim):
    from astropy.table import Table

    from legato.classical.run import fit_stamp_set
    from legato.io.stamps import StampSetMeta, read_stamp_set, write_stamp_set

    stamps, labels, _ = read_stamp_set(tiny_sim / "test")
    stamps = stamps[:3].copy()
    stamps[1, 5:9, 5:9] = np.nan
    meta = StampSetMeta(pixel_scale=0.06, zeropoint=25.9463, band="F160W", psf_id="x", domain="test", extra={"SKYSIG": 0.008725})
    write_stamp_set(tmp_path / "set", stamps, labels[:3], meta)
    fit_stamp_set(tmp_path / "set", tmp_path / "out.fits", raw_data["psf"], SETTINGS, workers=1, progress=False)
    flags = list(Table.read(tmp_path / "out.fits")["flags"])
    assert flags[1] == FLAG_BAD_INPUT and len(flags) == 3


def test_fits_carry_formal_errors_propagated_to_the_magnitude(psf_array, galsim_psf):
    from scipy.special import gammaincinv, gammaln

    from legato.classical.fitter import sersic_log_flux_slope

    truth = dict(mag=22.0, re_arcsec=0.4, n=1.5, q=0.7, pa_deg=0.0, x_offset_pix=0.0, y_offset_pix=0.0)
    image = render_sersic_stamp(**truth, psf=galsim_psf, size=64, pixel_scale=PIXEL_SCALE_ARCSEC, zeropoint=SETTINGS.zeropoint)
    noisy = image + np.random.default_rng(2).normal(0.0, 0.008725, image.shape)
    result = fit_stamp(noisy, noise_map(image, 0.008725, None), psf_array, SETTINGS)
    for name in ("mag_err", "re_arcsec_err", "n_err", "ellipticity_err"):
        assert np.isfinite(result[name]) and result[name] > 0, name
    assert result["mag_err"] < 0.2 and result["re_arcsec_err"] < 0.2 * result["re_arcsec"]

    def exact_log_flux(n):  # b_n from the incomplete gamma function, not the series
        b = gammaincinv(2 * n, 0.5)
        return np.log(n) + b + gammaln(2 * n) - 2 * n * np.log(b)

    for n in (0.5, 1.0, 4.0):
        exact = (exact_log_flux(n + 1e-4) - exact_log_flux(n - 1e-4)) / 2e-4
        assert sersic_log_flux_slope(n) == pytest.approx(exact, rel=0.01)
    assert np.isnan(fit_stamp(np.zeros((64, 64)), np.ones((64, 64)), psf_array, SETTINGS)["mag_err"])


def test_network_started_fits_start_from_the_estimate(tiny_sim, raw_data, tmp_path, repo_root, trained):
    from astropy.table import Table
    from typer.testing import CliRunner

    from legato.classical.run import fit_stamp_set
    from legato.classical.starts import start_estimates
    from legato.cli import app
    from legato.io.stamps import read_labels

    labels = read_labels(tiny_sim / "test")
    starts_path = tmp_path / "starts.fits"
    starts = labels["id", "mag", "re_arcsec", "n", "ellipticity"].copy()
    starts["mag"][1] = np.nan  # a row without an estimate starts from the moments
    starts.write(starts_path)
    loaded = start_estimates(starts_path)
    assert set(loaded) == set(int(i) for i in labels["id"]) and np.isnan(loaded[int(labels["id"][1])][0])
    # an estimator folder predicts the set first
    from legato.classical.starts import network_starts

    predicted = network_starts(trained[0] / "arch1", tiny_sim / "test")
    assert set(predicted) == set(loaded) and all(np.all(np.isfinite(v)) for v in predicted.values())
    network = tmp_path / "network.fits"
    fit_stamp_set(
        tiny_sim / "test", network, raw_data["psf"], SETTINGS, workers=1, block_size=4, max_stamps=8, progress=False, starts=loaded
    )
    moments = tmp_path / "moments.fits"
    fit_stamp_set(tiny_sim / "test", moments, raw_data["psf"], SETTINGS, workers=1, block_size=4, max_stamps=8, progress=False)
    network_fits, moments_fits = Table.read(network), Table.read(moments)
    assert network_fits.meta["START"] == "network" and moments_fits.meta["START"] == "moments"
    assert network_fits.meta["FINGERPR"] != moments_fits.meta["FINGERPR"]
    # started at the truth, a fit needs fewer function evaluations than from the moments
    assert np.mean(network_fits["n_evaluations"]) < np.mean(moments_fits["n_evaluations"])
    good = (network_fits["flags"] == 0) & (np.asarray(labels["mag"][:8]) < 23)
    assert np.all(np.abs(network_fits["mag"][good] - labels["mag"][:8][good]) < 0.3)

    import yaml

    runner = CliRunner()
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert params["classical"]["start"] == "network"  # the default of the classical stage
    del params["classical"]["starts"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    base = [
        "fit-classical",
        "--params",
        str(tmp_path / "params.yaml"),
        "--stamps",
        str(tiny_sim / "test"),
        "--out",
        str(tmp_path / "x.fits"),
        "--psf",
        str(raw_data["psf"]),
        "--no-track",
        "--no-progress",
        "--max-stamps",
        "2",
    ]
    result = runner.invoke(app, base)
    assert result.exit_code == 1 and "--start network needs --starts" in result.output
    result = runner.invoke(app, [*base, "--starts", str(tmp_path / "missing.fits")])
    assert result.exit_code == 1 and "cannot read the start catalogue" in result.output
    starts.remove_column("n")
    starts.write(tmp_path / "incomplete.fits")
    result = runner.invoke(app, [*base, "--starts", str(tmp_path / "incomplete.fits")])
    assert result.exit_code == 1 and "lacks the column(s) n" in result.output and not (tmp_path / "x.fits").exists()
    result = runner.invoke(app, [*base, "--start", "moments"])
    assert result.exit_code == 0, result.output
    assert Table.read(tmp_path / "x.fits").meta["START"] == "moments"
