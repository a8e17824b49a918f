"""Crowded, multi-band training stamps: band PSFs, the band library, scene composition, the PSF-conditioned network."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from legato.errors import ConfigError
from legato.simulation.noise import NoiseModel
from legato.training.noisy_batches import DepthRange
from legato.training.scenes import SceneLibrary, SceneModel, compose_scenes, scene_batch, shift_into, sky_residuals


def test_band_psfs_are_ordered_by_wavelength_and_f160w_is_unchanged(tmp_path, raw_data):
    from legato.simulation.psf import BANDS, psf_summary, read_psf_image, write_psf_image

    fwhm = {}
    for band in BANDS:
        path = write_psf_image(tmp_path / f"{band}.fits", band=band)
        fwhm[band], r50 = psf_summary(read_psf_image(path))
        assert 0.05 < r50 < fwhm[band] < 0.25
    assert fwhm["F606W"] < fwhm["F814W"] < fwhm["F105W"] < fwhm["F125W"] < fwhm["F140W"] < fwhm["F160W"]
    assert (tmp_path / "F160W.fits").read_bytes() == raw_data["psf"].read_bytes()  # the published F160W model, byte for byte
    with pytest.raises(ConfigError, match="no PSF model for band 'F200W'"):
        write_psf_image(tmp_path / "x.fits", band="F200W")


def test_band_mixture_draws_each_band_with_its_psf_zeropoint_and_prior(band_config):
    from legato.simulation.simulate import draw_split_parameters

    table = draw_split_parameters(band_config)["train"]
    assert len(table) == 40 and set(table["band"]) == {"F125W", "F160W"}
    assert np.all(np.abs(np.asarray(table["psf_dilation"]) - 1) <= 0.1)
    for band, zeropoint in (("F125W", 26.2303), ("F160W", 25.9463)):
        rows = table["band"] == band
        assert np.allclose(table["zeropoint"][rows], zeropoint)
        assert np.allclose(table["flux"][rows], 10 ** (-0.4 * (table["mag"][rows] - zeropoint)))
    f125 = np.asarray(table["psf_fwhm_arcsec"][table["band"] == "F125W"] / table["psf_dilation"][table["band"] == "F125W"])
    assert np.allclose(f125, f125[0]) and f125[0] < np.min(
        table["psf_fwhm_arcsec"][table["band"] == "F160W"] / table["psf_dilation"][table["band"] == "F160W"]
    )


def test_band_library_renders_with_the_drawn_psf(band_config, tmp_path):
    from legato.io.stamps import read_stamp_set
    from legato.simulation.simulate import simulate

    simulate(band_config, tmp_path / "bands", workers=1, progress=False)
    stamps, labels, header = read_stamp_set(tmp_path / "bands" / "train")
    assert header["FILTER"] == "MULTI" and stamps.shape == (40, 64, 64)
    flux = stamps.sum(axis=(1, 2))
    small = (np.asarray(labels["re_arcsec"]) < 0.3) & (np.asarray(labels["n"]) < 2)  # compact, low-n galaxies keep their flux in the stamp
    assert np.allclose(flux[small], np.asarray(labels["flux"])[small], rtol=0.05)
    # a wider PSF spreads the same galaxy: peak over flux falls as the PSF grows
    peak = stamps.max(axis=(1, 2)) / flux
    compact = small & (np.asarray(labels["re_arcsec"]) < 0.1)
    if compact.sum() >= 4:
        assert np.corrcoef(peak[compact], np.asarray(labels["psf_fwhm_arcsec"])[compact])[0, 1] < 0


def test_shift_into_moves_whole_pixels_and_drops_what_leaves():
    canvas = np.zeros((5, 5))
    image = np.zeros((5, 5))
    image[2, 2] = 1.0
    image[0, 0] = 7.0
    shift_into(canvas, image, 1, -2)
    assert canvas[3, 0] == 1.0 and canvas.sum() == 1.0  # the corner pixel fell outside


@pytest.fixture()
def library():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :32]
    blob = np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 8.0)
    models = (blob[None] * rng.uniform(1, 5, (50, 1, 1))).astype(np.float32)
    mag = rng.uniform(18, 24, 50)
    scene = SceneModel(neighbour_probability=1.0, max_neighbours=2, distance_pix=(8.0, 10.0))
    return SceneLibrary(
        models=models,
        targets=np.column_stack([mag, mag]),
        band_index=np.repeat([0, 1], 25),
        weights=scene.target_weights(mag),
        extra=mag[:, None],
    ), scene


def test_scenes_add_neighbours_of_the_same_band_at_the_asked_distance(library):
    lib, scene = library
    rows = np.arange(10)
    scenes, neighbours = compose_scenes(lib, rows, scene, np.random.default_rng(0))
    assert np.all((neighbours >= 1) & (neighbours <= 2))
    added = scenes.sum(axis=(1, 2)) - lib.models[rows].sum(axis=(1, 2))
    assert np.all(added > 0)  # neighbours' light (partly outside the stamp)
    centre = scenes[:, 14:19, 14:19].sum(axis=(1, 2))
    assert np.allclose(centre, lib.models[rows][:, 14:19, 14:19].sum(axis=(1, 2)), rtol=0.2)  # the target stays put
    isolated, counts = compose_scenes(lib, rows, replace(scene, neighbour_probability=0.0), np.random.default_rng(0))
    assert counts.sum() == 0 and np.allclose(isolated.sum(axis=(1, 2)), lib.models[rows].sum(axis=(1, 2)), rtol=1e-5)


def test_scene_batches_are_pure_functions_of_seed_and_step(library):
    lib, scene = library
    noise = NoiseModel(sky_sigma=0.01, exposure_time=1000.0)
    first = scene_batch(lib, scene, noise, DepthRange(), 16, seed=5, step=3)
    again = scene_batch(lib, scene, noise, DepthRange(), 16, seed=5, step=3)
    other = scene_batch(lib, scene, noise, DepthRange(), 16, seed=5, step=4)
    assert len(first) == 3 and all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert np.array_equal(first[1][:, 0], first[2][:, 0])  # targets and extra inputs of the same rows


def test_bright_targets_are_oversampled_by_flattening():
    mag = np.concatenate([np.full(900, 23.5), np.full(100, 19.5)])
    flat = SceneModel(bright_flattening=1.0).target_weights(mag)
    prior = SceneModel(bright_flattening=0.0).target_weights(mag)
    assert prior[mag < 20].sum() == pytest.approx(0.1) and flat[mag < 20].sum() == pytest.approx(0.5)


def test_sky_residuals_scale_with_the_sky_sigma():
    scene = SceneModel(sky_offset_sigma=0.3, sky_gradient_sigma=0.0)
    planes = sky_residuals((2000, 8, 8), np.full(2000, 0.01), scene, np.random.default_rng(1))
    assert np.std(planes[:, 0, 0]) == pytest.approx(0.003, rel=0.1) and np.allclose(planes, planes[:, :1, :1])


def test_psf_conditioned_network_takes_the_psf_summary():
    from legato.models.noise_aware import build_production, forward_in_batches, psf_features

    model = build_production(
        0.0087, stamp_size=32, further_filters=(8, 8), initial_filters=4, dense_units=(8,), uncertainty_units=4, psf_inputs=2
    )
    assert [i.name for i in model.inputs] == ["stamp", "psf"]
    stamps = np.random.default_rng(0).normal(0, 0.01, (5, 32, 32)).astype(np.float32)
    features = psf_features(np.full(5, 0.18), np.full(5, 0.12))
    assert np.allclose(features, 0.0, atol=1e-6)
    narrow = forward_in_batches(model, stamps, batch_size=2, psf=psf_features(np.full(5, 0.1), np.full(5, 0.06)))
    assert forward_in_batches(model, stamps, psf=features).shape == (5, 9)
    assert not np.allclose(narrow, forward_in_batches(model, stamps, psf=features))  # the PSF input reaches the output


def test_psf_input_needs_psf_columns(sim_config):
    from astropy.table import Table

    from legato.training.noise_aware import ProductionConfig, scene_library

    labels = Table({"mag": [20.0, 21.0]})
    with pytest.raises(ConfigError, match="psf_input needs a multi-band noiseless set with psf_fwhm_arcsec"):
        scene_library(np.zeros((2, 8, 8)), np.zeros((2, 4)), labels, ProductionConfig(psf_input=True))


def test_scene_recipe_reads_from_params(params):
    from legato.training.noise_aware import ProductionConfig, training_recipe

    config = ProductionConfig.from_params(params, section="scenes")
    assert config.psf_input and config.scenes.max_neighbours == 3 and config.scenes.distance_pix == (4.0, 30.0)
    recipe = training_recipe(config.as_dict())
    assert recipe["scenes"]["bright_flattening"] == 0.5 and recipe["psf_input"] is True
    isolated = ProductionConfig.from_params(params)
    assert "scenes" not in isolated.as_dict() and "psf_input" not in isolated.as_dict()  # the published recipe reads as before
    with pytest.raises(ConfigError, match="bad scenes parameters"):
        ProductionConfig.from_params({"scenes": {"scenes": {"crowding": 2}}}, section="scenes")


def test_one_band_recipes_leave_the_band_mixture_out(sim_config, band_config):
    """A one-band set's fingerprint recipe reads as before band mixtures existed (its dependants stay up to date)."""
    from legato.simulation.simulate import split_recipes

    assert "bands" not in split_recipes(sim_config)["test"]["config"]
    mixed = split_recipes(band_config)["test"]
    assert mixed["set"] == "bandsnoiseless" and mixed["config"]["bands"]["psf_jitter"] == 0.1
    assert any(path.endswith("wfc3ir_f125w_psf.fits") for path in mixed["inputs"])


def test_test_a_is_scored_against_labels_and_truth_split_by_neighbours():
    from astropy.table import Table

    from legato.evaluation.truth import score_test_a

    rng = np.random.default_rng(2)
    count = 60
    truth = {
        "gen_mag": rng.uniform(19, 25, count),
        "gen_re_arcsec": rng.uniform(0.1, 1, count),
        "gen_n": rng.uniform(0.5, 4, count),
        "gen_ellipticity": rng.uniform(0, 0.8, count),
    }
    labels = Table(
        truth
        | {
            "gen_total_mag": truth["gen_mag"],
            "kind": np.where(np.arange(count) % 2, "sersic", "cosmos"),
            "n_neighbours": np.arange(count) % 3,
            "mag": truth["gen_mag"] + rng.normal(0, 0.05, count),
            "re_arcsec": truth["gen_re_arcsec"] * 1.02,
            "n": truth["gen_n"],
            "ellipticity": truth["gen_ellipticity"],
        }
    )
    perfect = {
        "mag": truth["gen_mag"],
        "re_arcsec": truth["gen_re_arcsec"],
        "n": truth["gen_n"],
        "ellipticity": truth["gen_ellipticity"],
        "mag_err": np.full(count, 0.01),
        "mag_err95": np.full(count, 0.2),
    }
    report = score_test_a(labels, {"perfect": perfect})
    assert report["counts"] == {"all": 60, "isolated": 20, "with_neighbours": 40}
    exact = report["against_truth"]["perfect"]["sersic_with_neighbours"]
    assert exact["count"] == 20 and exact["r2"]["re"] == 1.0 and exact["coverage"]["68"]["mag"] == 1.0
    assert report["against_labels"]["perfect"]["isolated"]["coverage"]["95"]["mag"] == 1.0
    assert report["against_labels"]["perfect"]["isolated"]["coverage"]["68"]["mag"] < 0.5  # labels scattered by 0.05 mag
    assert (
        report["against_truth"]["classical_labels"]["sersic_isolated"]["r2"]["re"] < 1.0
        and "coverage" not in report["against_truth"]["classical_labels"]["sersic_isolated"]
    )
    assert report["total_magnitude"]["perfect"]["all"]["r2"]["mag"] == 1.0
    assert "blend_flag" not in report  # no flags: no split by them

    from legato.flags import BLENDED

    flagged = dict(perfect, flags=np.where(np.arange(count) % 3 == 1, BLENDED, 0), neighbour_fraction=np.zeros(count))
    split = score_test_a(labels, {"flagged": flagged})
    assert split["against_labels"]["flagged"]["flagged_blended"]["count"] == 20
    assert split["blend_flag"]["flagged"] == {"flagged": 20, "recall_of_stamps_with_neighbours": 0.5, "precision": 1.0}


def test_multi_band_magnitudes_are_learnt_on_the_f160w_zeropoint():
    from legato.conventions import ZEROPOINT_AB, mag_to_flux
    from legato.models.noise_aware import reference_band_mag

    # the same flux in electrons/s is the same target in every band, whatever the band's zeropoint
    flux = 3.0
    mags = {band: -2.5 * np.log10(flux) + zp for band, zp in ZEROPOINT_AB.items()}
    moved = {band: float(reference_band_mag(mag, ZEROPOINT_AB[band])) for band, mag in mags.items()}
    assert np.allclose(list(moved.values()), mags["F160W"]) and moved["F160W"] == pytest.approx(mags["F160W"])
    assert mag_to_flux(moved["F125W"], ZEROPOINT_AB["F160W"]) == pytest.approx(flux)
    assert len(set(ZEROPOINT_AB.values())) == len(ZEROPOINT_AB)  # no two bands share a zeropoint (ingest tells the band by it)
