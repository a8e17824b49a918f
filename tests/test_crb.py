"""The Cramér-Rao bound: its conventions, its agreement with maximum-likelihood fits, flags, the stage and efficiency."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from legato.cli import app
from legato.modelling.bounds import (
    AT_BOUND,
    ILL_CONDITIONED,
    FiniteSteps,
    StampModel,
    fisher_point,
    galaxy_bound,
)

ZEROPOINT = 25.9463
SKY_SIGMA = 0.008725
EXPOSURE_TIME = 20000.0
BRIGHT = fisher_point(mag=20.0, re_arcsec=0.25, n=1.5, ellipticity=0.3, pa_deg=30.0, x_offset_pix=0.1, y_offset_pix=-0.2)


def stamp_model(psf, sky_sigma=SKY_SIGMA, exposure_time=EXPOSURE_TIME, steps=FiniteSteps()) -> StampModel:
    from legato.modelling.renderer import ModelRenderer

    return StampModel(ModelRenderer(psf, 64, 0.06, ZEROPOINT), sky_sigma, exposure_time, steps)


def test_bound_scales_exactly_with_the_noise_sigma(galsim_psf):
    base, flag = galaxy_bound(BRIGHT, stamp_model(galsim_psf))
    assert flag == 0
    # sky and source noise both scaled by k (sky sigma x k, exposure time / k^2): every bound x k
    for k in (0.5, 2.0):
        scaled, _ = galaxy_bound(BRIGHT, stamp_model(galsim_psf, SKY_SIGMA * k, EXPOSURE_TIME / k**2))
        for name, value in base.items():
            assert scaled[name] == pytest.approx(k * value, rel=1e-9), name
    # sky noise only: the bound is proportional to the sky sigma
    sky_only, _ = galaxy_bound(BRIGHT, stamp_model(galsim_psf, exposure_time=None))
    doubled, _ = galaxy_bound(BRIGHT, stamp_model(galsim_psf, 2 * SKY_SIGMA, exposure_time=None))
    assert doubled["crb_mag"] == pytest.approx(2 * sky_only["crb_mag"], rel=1e-9)
    # the source's own Poisson noise only adds variance
    assert all(base[name] > sky_only[name] for name in base)


def test_bound_does_not_depend_on_the_finite_difference_step(galsim_psf):
    base, _ = galaxy_bound(BRIGHT, stamp_model(galsim_psf))
    for factor in (0.5, 2.0):
        other, _ = galaxy_bound(BRIGHT, stamp_model(galsim_psf, steps=FiniteSteps().scaled(factor)))
        for name, value in base.items():
            assert other[name] == pytest.approx(value, rel=5e-3), (name, factor)


def test_maximum_likelihood_fits_reach_the_bound(galsim_psf, raw_data):
    """200 noise realisations of one bright galaxy fitted by the classical fitter: variance within 20% of the bound."""
    from legato.classical.fitter import FitSettings, fit_stamp, fitting_psf, noise_map
    from legato.simulation.noise import NoiseModel
    from legato.simulation.psf import read_psf_image

    model_of = stamp_model(galsim_psf)
    bounds, flag = galaxy_bound(BRIGHT, model_of)
    assert flag == 0
    noise = NoiseModel(sky_sigma=SKY_SIGMA, exposure_time=EXPOSURE_TIME)
    model = model_of.render(BRIGHT)
    psf = fitting_psf(read_psf_image(raw_data["psf"]).array, 41)
    settings = FitSettings(pixel_scale=0.06, zeropoint=ZEROPOINT)
    rng = np.random.default_rng(1)
    fits = []
    for _ in range(200):
        image = noise.add_noise(model, rng)
        fits.append(fit_stamp(image, noise_map(image, SKY_SIGMA, EXPOSURE_TIME), psf, settings))
    assert all(fit["flags"] == 0 for fit in fits)
    for column in ("mag", "re_arcsec", "n", "ellipticity"):
        variance = np.var([fit[column] for fit in fits], ddof=1)
        assert 0.8 <= variance / bounds[f"crb_{column}"] ** 2 <= 1.2, column


def test_galaxies_without_a_valid_bound_get_a_flag_and_nan(galsim_psf):
    at_limit, flag = galaxy_bound(fisher_point(21.0, 0.3, 6.2, 0.2, 0.0), stamp_model(galsim_psf))
    assert flag == AT_BOUND and all(np.isnan(v) for v in at_limit.values())
    unresolved, flag = galaxy_bound(fisher_point(22.0, 1e-3, 1.5, 0.3, 30.0), stamp_model(galsim_psf))
    assert flag == ILL_CONDITIONED and all(np.isnan(v) for v in unresolved.values())
    _, flag = galaxy_bound(np.array([np.nan, 0, 0, 0, 0, 0, 0]), stamp_model(galsim_psf))
    assert flag == AT_BOUND


@pytest.fixture(scope="module")
def bound_table(tiny_sim, raw_data, repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("crb") / "test.fits"
    result = CliRunner().invoke(
        app,
        [
            "crb",
            "--params",
            str(repo_root / "params.yaml"),
            "--stamps",
            str(tiny_sim / "test"),
            "--psf",
            str(raw_data["psf"]),
            "--out",
            str(out),
            "--report",
            str(out.parent / "stage.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_crb_stage_writes_a_bound_per_galaxy_with_units(bound_table, tiny_sim):
    from legato.io.stamps import read_labels

    table = Table.read(bound_table)
    truth = read_labels(tiny_sim / "test")
    assert list(table["id"]) == list(truth["id"])
    assert str(table["crb_mag"].unit) == "mag" and str(table["crb_re_arcsec"].unit) == "arcsec"
    valid = table["crb_flags"] == 0
    assert valid.sum() >= 0.9 * len(table)
    assert np.all(np.asarray(table["crb_mag"])[valid] > 0) and np.all(np.isnan(np.asarray(table["crb_mag"])[~valid]))
    # brighter galaxies are measured better (the bound of mag grows with mag, on average)
    mag, bound = np.asarray(truth["mag"])[valid], np.asarray(table["crb_mag"])[valid]
    assert np.corrcoef(mag, np.log(bound))[0, 1] > 0.5
    stage = json.loads((bound_table.parent / "stage.json").read_text())
    assert stage["galaxies"] == len(table) and stage["valid"] == int(valid.sum())
    assert all(change["max"] < 0.01 for change in stage["step_convergence"]["relative_change"].values())


def test_crb_stage_refuses_a_noiseless_set_with_one_line(tmp_path, raw_data, repo_root, sim_config):
    from dataclasses import replace

    from legato.simulation.simulate import simulate

    folder = tmp_path / "noiseless"
    simulate(replace(sim_config, sizes={"train": 0, "val": 0, "test": 4}, noiseless=True), folder, workers=1, progress=False)
    out = tmp_path / "crb.fits"
    result = CliRunner().invoke(
        app,
        [
            "crb",
            "--params",
            str(repo_root / "params.yaml"),
            "--stamps",
            str(folder / "test"),
            "--psf",
            str(raw_data["psf"]),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1 and "noiseless set has no Cramér-Rao bound" in result.output
    assert not out.exists()


def test_evaluation_reports_efficiency_the_limit_column_and_galleries(bound_table, trained, tiny_sim, raw_data, tmp_path):
    from mlflow import MlflowClient

    from legato.evaluation.evaluate import evaluate

    models, _ = trained
    reports = tmp_path / "reports"
    table1 = evaluate(
        tiny_sim / "test",
        {"arch1": models / "arch1"},
        None,
        {"paper_h23": 23.0, "full_h245": 24.5},
        [16.0, 24.5],
        reports_dir=reports,
        predictions_dir=tmp_path / "p",
        crb={"table": bound_table, "mag_bins": [16.0, 20.0, 22.0, 24.5]},
        fit_quality={"psf": raw_data["psf"], "chi2_threshold": 1.57},
    )
    assert set(table1["limit"]) == {"mag", "re", "n", "ellipticity"} and "limit" in table1["full_h245"]
    # an efficient unbiased estimator beats a two-epoch network on toy data: limit R² above the network's
    report = json.loads((reports / "crb.json").read_text())
    block = report["subsets"]["full_h245"]
    for p in ("mag", "re", "n", "ellipticity"):
        assert block["limit_r2"][p] > block["methods"]["arch1"]["r2"][p]
        assert block["methods"]["arch1"]["ratio"][p] > 1.0
    rows = report["binned"]["arch1"]["mag"]
    assert [r["mag_lo"] for r in rows] == [16.0, 20.0, 22.0]
    assert sum(r["count"] for r in rows) == block["n_bounded"]
    assert report["closest"]["mag"] == ["arch1" if r["count"] else None for r in rows]
    assert (reports / "figures" / "crb_efficiency.png").stat().st_size > 0
    assert (reports / "plots" / "crb_re.csv").read_text().startswith("mag,crb,arch1")
    # every estimate gets the goodness of fit of its model
    predictions = Table.read(tmp_path / "p" / "arch1_test.fits")
    assert np.all(np.asarray(predictions["chi2_nu"]) > 0) and "residual_asymmetry" in predictions.colnames
    summary = json.loads((reports / "evaluation.json").read_text())["goodness_of_fit"]["arch1"]
    assert summary["median_chi2_nu"] > 0 and 0 <= summary["bad_fit_fraction"] <= 1
    # the method's worst and typical galaxies, logged with the efficiency figure to its run
    run_id = json.loads((models / "arch1" / "run.json").read_text())["run_id"]
    logged = {a.path for a in MlflowClient().list_artifacts(run_id, "evaluation")}
    assert {"evaluation/gallery_arch1.png", "evaluation/crb_efficiency.png"} <= logged
