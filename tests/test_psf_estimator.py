"""The PSF-conditioned, scene-trained production estimator: finalised, loaded, predicting per band (toy scale)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from legato.errors import ConfigError
from legato.flags import BLENDED, INPUT_OUT_OF_RANGE
from legato.training.noise_aware import ProductionConfig
from legato.training.scenes import SceneModel

TOY_SCENES = ProductionConfig(
    steps=4, batch_size=8, checkpoint_every=2, validation_stamps=8, calibration_stamps=240, seed=7, scenes=SceneModel(), psf_input=True
)


@pytest.fixture(scope="module")
def scene_estimator(band_config, tmp_path_factory):
    from legato.simulation.simulate import simulate
    from legato.training.noise_aware import train_production
    from legato.training.noise_aware_finalize import finalize_production

    root = tmp_path_factory.mktemp("scenes")
    simulate(replace(band_config, sizes={"train": 40, "val": 24, "test": 8}), root / "bands", workers=1, progress=False)
    progress = train_production(TOY_SCENES, root / "bands", root / "checkpoint", log=lambda line: None)
    summary = finalize_production(TOY_SCENES, root / "bands", root / "checkpoint", root / "estimator", progress)
    return root, summary


@pytest.fixture(scope="module")
def loaded(scene_estimator):
    from legato.models.estimator import LoadedEstimator

    return LoadedEstimator(scene_estimator[0] / "estimator")


@pytest.fixture(scope="module")
def test_stamps(scene_estimator):
    from legato.io.stamps import read_stamp_set

    stamps, labels, _ = read_stamp_set(scene_estimator[0] / "bands" / "test")
    noisy = stamps + np.random.default_rng(3).normal(0, 0.0087, stamps.shape).astype(np.float32)
    return noisy, labels


def test_manifest_lists_the_bands_their_psf_range_and_a_blended_calibration(scene_estimator, loaded):
    root, _ = scene_estimator
    bands = loaded.psf_bands
    assert set(bands) == {"F125W", "F160W"}
    for entry in bands.values():
        low, high = entry["fwhm_range"]
        assert low < entry["fwhm_arcsec"] < high and high / low == pytest.approx(1.1 / 0.9, rel=0.05)
    assert bands["F125W"]["fwhm_arcsec"] < bands["F160W"]["fwhm_arcsec"]
    assert bands["F125W"]["zeropoint"] == pytest.approx(26.2303)
    assert "blended" in loaded.uncertainty and 0 < loaded.uncertainty["blended_fraction"] < 1
    assert loaded.input_range.zeropoint == pytest.approx(25.9463)  # the range is kept on the reference zeropoint
    card = (root / "estimator" / "MODEL_CARD.md").read_text()
    assert "F125W (zeropoint 26.2303" in card and "calibrated\napart" in card and "Crowded scenes" in card


def test_rows_record_the_band_and_magnitudes_take_its_zeropoint(loaded, test_stamps):
    stamps, _ = test_stamps
    assert {"psf_fwhm_arcsec", "zeropoint", "neighbour_fraction"} <= set(loaded.output_columns)
    default = loaded.predict(stamps)
    assert np.allclose(default["zeropoint"], 25.9463) and np.allclose(default["psf_fwhm_arcsec"], loaded.psf_bands["F160W"]["fwhm_arcsec"])
    f125 = loaded.predict(stamps, psf=loaded.psf_condition(band="F125W"))
    assert np.allclose(f125["zeropoint"], 26.2303)
    # same network magnitudes on the reference zeropoint apart from the PSF input: the aperture magnitudes move by the zeropoints
    assert np.allclose(f125["mag_aper"] - default["mag_aper"], 26.2303 - 25.9463, atol=1e-4, equal_nan=True)
    shifted = loaded.predict(stamps, psf=loaded.psf_condition(band="F160W", zeropoint=26.9463))
    assert np.allclose(shifted["mag"] - default["mag"], 1.0, atol=1e-4)
    # one PSF per stamp, over several forward passes, gives each stamp the rows of its own PSF
    from legato.models.psf_condition import PsfCondition

    bands = loaded.psf_bands
    mixed = PsfCondition(
        band="mixed",
        psf_id="per stamp",
        fwhm_arcsec=np.where(np.arange(len(stamps)) % 2, bands["F125W"]["fwhm_arcsec"], bands["F160W"]["fwhm_arcsec"]),
        r50_arcsec=np.where(np.arange(len(stamps)) % 2, bands["F125W"]["r50_arcsec"], bands["F160W"]["r50_arcsec"]),
        zeropoint=25.9463,
    )
    per_stamp = loaded.predict(stamps, batch_size=3, psf=mixed)
    f125_on_f160 = loaded.predict(stamps, psf=replace(loaded.psf_condition(band="F125W"), zeropoint=25.9463))
    odd = np.arange(len(stamps)) % 2 == 1
    assert np.allclose(per_stamp["re_arcsec"][odd], f125_on_f160["re_arcsec"][odd], rtol=1e-5)
    assert np.allclose(per_stamp["re_arcsec"][~odd], default["re_arcsec"][~odd], rtol=1e-5)


def test_a_psf_file_gives_the_rows_of_its_band_and_a_wide_psf_is_out_of_range(loaded, test_stamps, repo_root, tmp_path):
    from astropy.io import fits

    stamps, _ = test_stamps
    by_band = loaded.predict(stamps, psf=loaded.psf_condition(band="F125W"))
    by_file = loaded.predict(stamps, psf=loaded.psf_condition(band="F125W", psf_file=repo_root / "data/psf/wfc3ir_f125w_psf.fits"))
    assert np.allclose(by_file["mag"], by_band["mag"], atol=2e-3) and np.allclose(by_file["re_arcsec"], by_band["re_arcsec"], rtol=5e-3)
    assert not np.any(by_file["flags"] & INPUT_OUT_OF_RANGE & ~by_band["flags"])  # the model file lies inside its band's range
    with fits.open(repo_root / "data/psf/wfc3ir_f160w_psf.fits") as hdul:
        image, header = hdul[0].data.astype(float), hdul[0].header
    from scipy.ndimage import zoom

    big = zoom(image, 1.5)  # a PSF 1.5x wider than any training band's
    centre = big.shape[0] // 2
    wide = big[centre - 30 : centre + 31, centre - 30 : centre + 31]
    fits.PrimaryHDU(wide / wide.sum(), header=header).writeto(tmp_path / "wide.fits")
    rows = loaded.predict(stamps, psf=loaded.psf_condition(band="F160W", psf_file=tmp_path / "wide.fits"))
    assert np.all(rows["flags"] & INPUT_OUT_OF_RANGE)


def test_unknown_bands_and_psfs_without_zeropoint_are_refused(loaded, tmp_path):
    with pytest.raises(ConfigError, match="trained on F125W, F160W only, not 'F814W'"):
        loaded.psf_condition(band="F814W")
    with pytest.raises(ConfigError, match="needs its band"):
        loaded.psf_condition(summary=(0.15, 0.1))
    from legato.serving.pyfunc import request_psf

    with pytest.raises(ConfigError, match="unknown request parameters"):
        request_psf(loaded, {"filter": "F125W"})
    with pytest.raises(ConfigError, match="give both"):
        request_psf(loaded, {"psf_fwhm_arcsec": 0.15})
    condition = request_psf(loaded, {"band": "F125W", "psf_fwhm_arcsec": 0.16, "psf_r50_arcsec": 0.11})
    assert condition.zeropoint == pytest.approx(26.2303) and condition.fwhm_arcsec == 0.16


def test_blended_stamps_are_flagged_and_calibrated_apart(loaded, test_stamps):
    stamps, _ = test_stamps
    crowded = stamps.copy()
    crowded[:, 28:36, 40:48] += stamps[:, 28:36, 28:36]  # a copy of each target's core 12 px away
    rows = loaded.predict(crowded)
    isolated = loaded.predict(stamps)
    assert np.mean(rows["flags"] & BLENDED > 0) > np.mean(isolated["flags"] & BLENDED > 0)
    assert np.nanmedian(rows["neighbour_fraction"]) > np.nanmedian(isolated["neighbour_fraction"])


def test_an_estimator_without_psf_input_takes_f160w_only(production):
    from legato.models.estimator import LoadedEstimator

    estimator = LoadedEstimator(production[0])
    assert estimator.psf_bands is None and estimator.psf_condition(band="F160W") is None
    with pytest.raises(ConfigError, match="takes no PSF input"):
        estimator.psf_condition(band="F125W")


def _post(url: str, payload: dict) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_served_requests_name_their_band_and_get_the_rows_of_legato_predict(scene_estimator, loaded, test_stamps, tmp_path):
    """The real `mlflow models serve` on 127.0.0.1 with the PSF-conditioned model: the band is a request parameter."""
    from legato.inference.predict import predict_stamps
    from legato.serving.pyfunc import save_estimator_model
    from legato.serving.server import model_server

    stamps, _ = test_stamps
    path = save_estimator_model(scene_estimator[0] / "estimator", tmp_path / "model", stamps[:2])
    server = model_server(str(path), log_path=tmp_path / "serve.log")
    with server:
        default_status, default = _post(server.url + "/invocations", {"inputs": stamps[:3].tolist()})
        status, body = _post(server.url + "/invocations", {"inputs": stamps[:3].tolist(), "params": {"band": "F125W"}})
        bad_status, bad = _post(server.url + "/invocations", {"inputs": stamps[:1].tolist(), "params": {"band": "F814W"}})
        averaged_status, averaged = _post(
            server.url + "/invocations", {"inputs": stamps[:3].tolist(), "params": {"band": "F125W", "symmetries": 4}}
        )
        refused_status, refused = _post(server.url + "/invocations", {"inputs": stamps[:1].tolist(), "params": {"symmetries": 9}})
    assert server.process.poll() is not None
    assert averaged_status == 200, averaged
    columns, _ = predict_stamps(loaded.averaging(4), stamps[:3], np.zeros(3, dtype=np.int32), None, psf=loaded.psf_condition(band="F125W"))
    for name in ("mag", "re_arcsec", "n", "ellipticity", "ellipticity_err"):
        np.testing.assert_allclose([row[name] for row in averaged["predictions"]], columns[name], rtol=1e-5)
    assert refused_status == 400 and "symmetries must be an integer from 1 to 8" in refused["message"]
    assert default_status == 200 and [row["zeropoint"] for row in default["predictions"]] == pytest.approx([25.9463] * 3)
    assert status == 200, body
    columns, flags = predict_stamps(loaded, stamps[:3], np.zeros(3, dtype=np.int32), None, psf=loaded.psf_condition(band="F125W"))
    assert [row["flags"] for row in body["predictions"]] == flags.tolist()
    for name, values in columns.items():
        np.testing.assert_allclose([row[name] for row in body["predictions"]], values, rtol=1e-5, equal_nan=True)
    assert bad_status == 400 and "not 'F814W'" in bad["message"] and "\n" not in bad["message"]


def test_cli_predict_takes_the_band_and_records_it(scene_estimator, test_stamps, repo_root, tmp_path):
    from astropy.io import fits
    from astropy.table import Table
    from typer.testing import CliRunner

    from legato.cli import app

    stamps, _ = test_stamps
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(stamps).writeto(cube)
    folder = str(scene_estimator[0] / "estimator")
    runner = CliRunner()
    common = ["predict", str(cube), "--model", folder, "--params", str(repo_root / "params.yaml"), "--no-progress"]
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "f125w.fits"), "--band", "F125W", "--crb", "--workers", "1"])
    assert result.exit_code == 0, result.output
    table = Table.read(tmp_path / "f125w.fits", mask_invalid=False)
    meta = {k.lower(): v for k, v in table.meta.items()}
    assert np.allclose(table["zeropoint"], 26.2303) and meta["band"] == "F125W" and meta["zeropoint"] == pytest.approx(26.2303)
    _assert_bounds_use_the_band(table, stamps, zeropoint=26.2303, psf=repo_root / "data" / "psf" / "wfc3ir_f125w_psf.fits")
    assert {"psf_fwhm_arcsec", "neighbour_fraction"} <= set(table.colnames)
    refused = runner.invoke(app, [*common, "-o", str(tmp_path / "bad.fits"), "--band", "F814W"])
    assert refused.exit_code == 1 and "not 'F814W'" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "bad.fits").exists()


def _assert_bounds_use_the_band(table, stamps, zeropoint: float, psf):
    """The catalogue's ``--crb`` columns are the bound of the band's model at its zeropoint (not F160W's)."""
    from legato.inference.measurements import BoundAugmentation
    from legato.modelling.renderer import renderer_from_psf_file, stamp_geometry

    row = int(np.flatnonzero(np.isfinite(table["crb_mag"]))[0])
    estimate = tuple(float(table[c][row]) for c in ("mag", "re_arcsec", "n", "ellipticity"))
    stamp, sigma = np.asarray(stamps[row], dtype=np.float64), float(table["sky_sigma"][row])
    for point, expected in ((zeropoint, True), (25.9463, False)):
        bounds, _ = BoundAugmentation(renderer_from_psf_file(psf, zeropoint=point)).measure(stamp, estimate, sigma, stamp_geometry(stamp))
        assert bool(np.isclose(table["crb_mag"][row], bounds["crb_mag"], rtol=1e-3)) is expected, (point, bounds)


def test_a_psf_conditioned_estimator_is_adapted_with_the_f160w_psf_and_keeps_its_bands(scene_estimator, test_stamps, tmp_path):
    from legato.models.estimator import LoadedEstimator
    from legato.training.adapt import AdaptationBase, AdaptConfig, FineTuning, fit_network, predict_network, save_estimator

    base = AdaptationBase(scene_estimator[0] / "estimator")
    assert base.psf is not None and base.psf.band == "F160W"
    stamps, labels = test_stamps
    config = AdaptConfig(sizes=(8,), epochs=1, max_steps=1, batch_size=4)
    model = base.finetuned(FineTuning())
    fit = fit_network(model, base.scaler, base.loss, (stamps, labels), (stamps, labels), config, 3e-4, 7, base.psf)
    assert fit["steps"] == 2 and np.isfinite(fit["best_val_loss"])
    assert np.isfinite(predict_network(model, base.scaler, stamps, base.psf)["mag"]).all()
    assert len(base.scratch(stamps.shape[1], 0.0).inputs) == 2  # from scratch: the same two inputs
    save_estimator(model, base.scaler, tmp_path / "adapted", base, (stamps, labels), adapted_from="scenes")
    adapted = LoadedEstimator(tmp_path / "adapted")
    assert adapted.psf_bands == base.estimator.psf_bands and "blended" in adapted.uncertainty
    rows = adapted.predict(stamps, psf=adapted.psf_condition("F125W"))
    assert {"psf_fwhm_arcsec", "zeropoint", "flags", "mag_err"} <= set(rows) and np.allclose(rows["zeropoint"], 26.2303)


@pytest.fixture(scope="module")
def crowded(test_stamps):
    """The test stamps with a copy of each target's core 12 px away: most are flagged BLENDED."""
    stamps, _ = test_stamps
    crowded = stamps.copy()
    crowded[:, 28:36, 40:48] += stamps[:, 28:36, 28:36]
    return np.concatenate([stamps, crowded])


def _routed(production, scene_estimator, out, sigma=None):
    from legato.models.estimator import LoadedEstimator
    from legato.models.routing import write_routed_estimator

    write_routed_estimator(production[0], scene_estimator[0] / "estimator", out, sigma)
    return LoadedEstimator(out)


def test_a_routed_estimator_measures_flagged_stamps_with_the_scene_network_and_the_rest_with_the_f160w_one(
    production, scene_estimator, loaded, crowded, tmp_path
):
    from legato.models.estimator import LoadedEstimator

    routed = _routed(production, scene_estimator, tmp_path / "routed")
    assert routed.output_columns == loaded.output_columns and routed.psf_bands == loaded.psf_bands
    rows = routed.predict(crowded)
    scenes, f160w = loaded.predict(crowded), LoadedEstimator(production[0]).predict(crowded)
    flagged = rows["flags"] & BLENDED > 0
    assert 0 < flagged.sum() < len(flagged) and rows["flags"].dtype == np.int32
    for name in ("mag", "re_arcsec", "n", "ellipticity", "re_arcsec_err", "neighbour_fraction"):
        np.testing.assert_allclose(rows[name][flagged], scenes[name][flagged], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(rows[name][~flagged], f160w[name][~flagged], rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(rows["flags"][~flagged], f160w["flags"][~flagged])
    # the F160W network's rows carry the call's PSF and zeropoint like the others
    assert np.allclose(rows["zeropoint"], 25.9463) and np.allclose(rows["psf_fwhm_arcsec"], loaded.psf_bands["F160W"]["fwhm_arcsec"])
    # another band: every stamp to the PSF-conditioned network
    f125 = routed.predict(crowded, psf=routed.psf_condition(band="F125W"))
    expected = loaded.predict(crowded, psf=loaded.psf_condition(band="F125W"))
    for name in routed.output_columns:
        np.testing.assert_allclose(f125[name], expected[name], rtol=1e-6, equal_nan=True)


def test_routing_by_disagreement_sends_more_stamps_to_the_scene_network(production, scene_estimator, loaded, crowded, tmp_path):
    from legato.models.routing import disagreement

    by_flag = _routed(production, scene_estimator, tmp_path / "flag").predict(crowded)
    everywhere = _routed(production, scene_estimator, tmp_path / "tight", sigma=1e-9).predict(crowded)
    never = _routed(production, scene_estimator, tmp_path / "loose", sigma=1e9).predict(crowded)
    scenes = loaded.predict(crowded)
    for name in ("mag", "re_arcsec", "n_err"):
        np.testing.assert_allclose(never[name], by_flag[name], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(everywhere[name], scenes[name], rtol=1e-6, equal_nan=True)
    gap = disagreement(
        {"mag": np.array([1.0, 1.0]), "mag_err": np.array([0.3, 0.1])},
        {"mag": np.array([1.5, 1.0]), "mag_err": np.array([0.4, 0.1])},
        ("mag",),
    )
    np.testing.assert_allclose(gap, [1.0, 0.0])


def test_a_routed_estimator_with_a_deblending_route_measures_the_blends_once_and_gives_each_route_its_rows(
    scene_estimator, loaded, crowded, tmp_path
):
    """The blends and the neighbour map are measured once (`legato predict`'s reader thread) for both routes; the
    rows are those of each route on its own stamps, and flipped passes keep the flags of the stamps as given."""
    from legato.inference.predict import check_chunk, predict_stamps
    from legato.models.deblending import write_deblended_estimator
    from legato.models.estimator import LoadedEstimator
    from legato.models.routing import write_routed_estimator

    write_deblended_estimator(scene_estimator[0] / "estimator", tmp_path / "deblended", 1)
    write_routed_estimator(tmp_path / "deblended", scene_estimator[0] / "estimator", tmp_path / "routed")
    routed, deblended = LoadedEstimator(tmp_path / "routed"), LoadedEstimator(tmp_path / "deblended")
    assert routed.deblends
    blend = routed.measure_blends(crowded)
    assert len(blend) == 3  # the deblending route removes the neighbours of its own rows
    for mine, route in zip(blend, deblended.measure_blends(crowded)):
        np.testing.assert_array_equal(mine, route)
    flags = np.zeros(len(crowded), dtype=np.int32)
    checks = check_chunk(routed, crowded, flags)
    assert len(checks.blend) == 3
    inline, inline_flags = predict_stamps(routed, crowded, flags, None)
    ahead, ahead_flags = predict_stamps(routed, crowded, flags, None, checks=checks)
    np.testing.assert_array_equal(ahead_flags, inline_flags)
    flagged = blend[1]
    assert 0 < flagged.sum() < len(flagged)
    unflagged = deblended.predict(crowded[~flagged])
    scenes = loaded.predict(crowded[flagged])
    for name in ("mag", "re_arcsec", "n", "ellipticity_err95", "neighbour_fraction"):
        np.testing.assert_array_equal(ahead[name], inline[name])
        np.testing.assert_allclose(inline[name][~flagged], unflagged[name], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(inline[name][flagged], scenes[name], rtol=1e-6, equal_nan=True)
    averaged = LoadedEstimator(tmp_path / "routed", symmetries=2).predict(crowded)
    np.testing.assert_array_equal(averaged["flags"], routed.predict(crowded)["flags"])


def test_routes_must_fit_together(production, scene_estimator, tmp_path):
    from legato.models.routing import write_routed_estimator

    with pytest.raises(ConfigError, match="must take a PSF input"):
        write_routed_estimator(scene_estimator[0] / "estimator", production[0], tmp_path / "swapped")
    write_routed_estimator(production[0], scene_estimator[0] / "estimator", tmp_path / "routed")
    with pytest.raises(ConfigError, match="not a routed one"):
        write_routed_estimator(tmp_path / "routed", scene_estimator[0] / "estimator", tmp_path / "nested")
    with pytest.raises(ConfigError, match="positive sigma"):
        write_routed_estimator(production[0], scene_estimator[0] / "estimator", tmp_path / "negative", -1.0)
    assert not (tmp_path / "swapped").exists() and not (tmp_path / "nested").exists() and not (tmp_path / "negative").exists()


def test_a_routed_estimator_is_served_and_predicted_like_any_other(production, scene_estimator, crowded, repo_root, tmp_path):
    """`legato route`, then the MLflow model (what `mlflow models serve` loads) gives the rows of `legato predict`."""
    import mlflow
    from typer.testing import CliRunner

    from legato.cli import app
    from legato.inference.predict import predict_stamps
    from legato.models.estimator import LoadedEstimator
    from legato.serving.pyfunc import save_estimator_model

    out = tmp_path / "routed"
    folder = str(scene_estimator[0] / "estimator")
    command = [
        "route",
        "--params",
        str(repo_root / "params.yaml"),
        "--isolated",
        str(production[0]),
        "--blended",
        folder,
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    routed = LoadedEstimator(out)
    assert routed.manifest["disagreement_sigma"] == pytest.approx(5.0)  # params.yaml route.disagreement_sigma
    model = mlflow.pyfunc.load_model(str(save_estimator_model(out, tmp_path / "model", crowded[:2])))
    served = model.predict(crowded, params={"band": "F160W"})
    columns, flags = predict_stamps(routed, crowded, np.zeros(len(crowded), dtype=np.int32), None)
    np.testing.assert_array_equal(served["flags"].to_numpy(), flags)
    for name in ("mag", "re_arcsec", "ellipticity_err95", "zeropoint"):
        np.testing.assert_allclose(served[name].to_numpy(), columns[name], rtol=1e-5, equal_nan=True)
    refused = CliRunner().invoke(app, [*command[:-1], str(tmp_path / "again"), "--disagreement-sigma", "0"])
    assert refused.exit_code == 1 and "positive sigma" in refused.output and not (tmp_path / "again").exists()
    # --section route_adapted: that section's keys over route's (the flag alone routes: no disagreement sigma)
    flagged = CliRunner().invoke(app, [*command[:-1], str(tmp_path / "flag_only"), "--section", "route_adapted"])
    assert flagged.exit_code == 0, flagged.output
    assert LoadedEstimator(tmp_path / "flag_only").manifest["disagreement_sigma"] is None


def test_a_psf_conditioned_estimator_is_refined_per_band_and_keeps_its_bands(
    scene_estimator, loaded, test_stamps, tiny_noiseless, repo_root, tmp_path
):
    """`legato refine --section refine_scenes` on the multi-band set: each band's rows measured with their true PSF."""
    import json

    from typer.testing import CliRunner

    from legato.cli import app
    from legato.models.estimator import LoadedEstimator

    root, _ = scene_estimator
    command = ["refine", "--params", str(repo_root / "params.yaml"), "--section", "refine_scenes", "--base", str(root / "estimator")]
    command += ["--train", str(root / "bands/train"), "--calibration", str(root / "bands/val"), "--out", str(tmp_path / "refined")]
    result = CliRunner().invoke(app, command + ["--report", str(tmp_path / "refine.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "refine.json").read_text())
    assert summary["train_rows"] == 2 * 40 and summary["calibration_rows"] == 2 * 24  # refine_scenes: copies 2, calibration_copies 2
    refined = LoadedEstimator(tmp_path / "refined")
    assert refined.psf_bands == loaded.psf_bands and refined.output_columns == loaded.output_columns
    stamps, _ = test_stamps
    condition = loaded.psf_condition(band="F125W")
    base, rows = loaded.predict(stamps, psf=condition), refined.predict(stamps, psf=condition)
    np.testing.assert_array_equal(rows["zeropoint"], base["zeropoint"])
    np.testing.assert_array_equal(rows["flags"], base["flags"])
    measured = np.isfinite(base["mag"]) & ((base["flags"] & BLENDED) == 0)
    assert measured.any() and np.all(rows["mag"][measured] != base["mag"][measured])
    command = [
        "refine",
        "--params",
        str(repo_root / "params.yaml"),
        "--base",
        str(root / "estimator"),
        "--train",
        str(tiny_noiseless / "train"),
    ]
    result = CliRunner().invoke(app, command + ["--calibration", str(tiny_noiseless / "val"), "--out", str(tmp_path / "single_band")])
    assert result.exit_code != 0 and "multi-band noiseless set" in result.output and "band, psf_fwhm_arcsec" in result.output
    assert not (tmp_path / "single_band").exists()
