"""The production estimator at toy scale: survey noise, resumable training, uncertainties, input flags, serving."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TOY_PRODUCTION as TOY
from legato.cli import app
from legato.simulation.noise import NoiseModel, survey_noise_realisation
from legato.symmetry import dihedral
from legato.training.noise_aware import ProductionConfig
from legato.training.noisy_batches import DepthRange, noisy_batch

NOISE = NoiseModel(sky_sigma=0.008725, exposure_time=20000.0)


def test_survey_noise_has_the_requested_pixel_sigma_white_or_correlated():
    rng = np.random.default_rng(0)
    models = np.zeros((4, 96, 96), dtype=np.float32)
    noisy = survey_noise_realisation(models, NOISE, np.array([0.25, 0.5, 1.0, 2.0]), np.array([0.0, 0.7, 0.0, 1.0]), rng)
    measured = noisy.std(axis=(1, 2)) / NOISE.sky_sigma
    np.testing.assert_allclose(measured, [0.25, 0.5, 1.0, 2.0], rtol=0.05)
    # correlated noise: neighbouring pixels are correlated, white noise is not
    lag = [np.corrcoef(img[:, :-1].ravel(), img[:, 1:].ravel())[0, 1] for img in noisy]
    assert abs(lag[0]) < 0.05 and lag[1] > 0.3 and lag[3] > lag[1]
    # the source Poisson noise follows the exposure of the depth: variance model / exposure
    bright = np.full((2000, 4, 4), 50.0, dtype=np.float32)
    deep = survey_noise_realisation(bright, NOISE, 0.25, 0.0, rng) - 50.0
    expected = np.sqrt((0.25 * NOISE.sky_sigma) ** 2 + 50.0 / (NOISE.exposure_time / 0.25**2))
    assert abs(deep.std() / expected - 1) < 0.03


def test_batches_are_a_pure_function_of_seed_and_step_and_symmetries_keep_labels():
    models = np.random.default_rng(1).random((10, 8, 8)).astype(np.float32)
    targets = np.arange(10, dtype=np.float32)[:, None]
    first = noisy_batch(models, targets, NOISE, DepthRange(), 4, seed=3, step=7)
    again = noisy_batch(models, targets, NOISE, DepthRange(), 4, seed=3, step=7)
    other = noisy_batch(models, targets, NOISE, DepthRange(), 4, seed=3, step=8)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    flipped = dihedral(models, np.arange(10) % 8)
    for k in range(10):  # every output is one of the 8 symmetries of its own stamp, with the same flux
        assert np.isclose(flipped[k].sum(), models[k].sum())
    np.testing.assert_array_equal(flipped[0], models[0])


def test_the_network_measures_the_noise_of_each_stamp():
    from legato.models.noise_aware import BorderNoise

    rng = np.random.default_rng(2)
    scale = np.array([0.25, 1.0, 2.0, 1.0])
    stamps = survey_noise_realisation(np.zeros((4, 64, 64), np.float32), NOISE, scale, np.array([0.0, 0.0, 0.0, 0.7]), rng)
    stamps[3, 20:44, 20:44] += 5.0  # a bright source in the middle does not enter the border estimate
    sigma = BorderNoise()(stamps).numpy()[:, 0]
    np.testing.assert_allclose(sigma / NOISE.sky_sigma, scale, rtol=0.1)


@pytest.mark.parametrize("count", [1, 2, 7, 960])
def test_the_one_sort_mad_selects_what_sorting_the_deviations_selects(count):
    from legato.models.noise_aware import sorted_mad

    rng = np.random.default_rng(count)
    values = rng.normal(size=(40, count)).astype(np.float32) * np.float32(3.7)
    values[::2] = np.round(values[::2])  # ties
    ordered = np.sort(values, axis=1)
    median = ordered[:, count // 2 : count // 2 + 1]
    expected = np.sort(np.abs(values - median), axis=1)[:, count // 2 : count // 2 + 1]
    np.testing.assert_array_equal(np.asarray(sorted_mad(ordered)), expected)  # the same float32 values, bit for bit


def test_resumed_training_reaches_the_uninterrupted_weights(tiny_noiseless, tmp_path):
    import keras

    from legato.training.noise_aware import CHECKPOINT_MODEL, train_production

    straight = train_production(TOY, tiny_noiseless, tmp_path / "straight", log=lambda line: None)
    first = train_production(TOY, tiny_noiseless, tmp_path / "resumed", max_seconds=0, log=lambda line: None)
    assert not first["finished"] and first["step"] == 1  # interrupted after one step, checkpoint written
    lines = []
    resumed = train_production(TOY, tiny_noiseless, tmp_path / "resumed", log=lines.append)
    assert resumed["finished"] and "continuing from step 1" in lines[0]
    assert straight["run_id"] != resumed["run_id"] and resumed["run_id"] == first["run_id"]  # one MLflow run per training
    a = keras.saving.load_model(tmp_path / "straight" / CHECKPOINT_MODEL, compile=False).get_weights()
    b = keras.saving.load_model(tmp_path / "resumed" / CHECKPOINT_MODEL, compile=False).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert [h["step"] for h in state["history"]] == [1, 3, 6]


def test_a_checkpoint_of_another_recipe_is_refused(tiny_noiseless, tmp_path):
    from legato.errors import ConfigError
    from legato.training.noise_aware import noiseless_set_noise, train_production

    train_production(replace(TOY, steps=2), tiny_noiseless, tmp_path / "ck", log=lambda line: None)
    with pytest.raises(ConfigError, match="another recipe"):
        train_production(replace(TOY, steps=2, learning_rate=2e-3), tiny_noiseless, tmp_path / "ck", log=lambda line: None)
    with pytest.raises(ConfigError, match="unknown production parameter"):
        ProductionConfig.from_params({"production": {"stepz": 3}})
    with pytest.raises(ConfigError, match="not a noiseless set"):
        noiseless_set_noise({"SKYSIG": 0.0087, "EXPTIME": 2e4}, tmp_path)


def test_estimator_gives_calibrated_errors_the_noise_and_input_flags(production, tiny_noiseless):
    from legato.flags import StampFlag
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.training.noisy_batches import noisy_copies

    folder, summary = production
    manifest = json.loads((folder / "estimator.json").read_text())
    calibration = manifest["uncertainty"]
    assert manifest["kind"] == "production" and set(calibration) == {"68", "95", "mag_edges", "noise_edges"}
    # factors per noise bin and predicted-magnitude bin
    assert np.shape(calibration["68"]) == (len(calibration["noise_edges"]) + 1, len(calibration["mag_edges"]) + 1, 4)
    assert (np.array(calibration["95"]) > np.array(calibration["68"])).all() and (np.array(calibration["68"]) > 0).all()
    assert (folder / "MODEL_CARD.md").read_text().startswith("# Model card") and summary["steps"] == 6
    estimator = LoadedEstimator(folder)
    models, labels, _ = load_split(tiny_noiseless / "test")
    stamps = noisy_copies(models[:8], NOISE, 1.0, 0.0, seed=4)
    values = estimator.predict(stamps)
    assert set(estimator.output_columns) == set(values)
    for name in ("mag", "re_arcsec", "n", "ellipticity"):
        assert np.all(values[f"{name}_err95"] > values[f"{name}_err"]) and np.all(values[f"{name}_err"] > 0)
    np.testing.assert_allclose(values["sky_sigma"] / NOISE.sky_sigma, 1.0, rtol=0.15)

    faint = labels["mag"][:8].argmax()
    extra = np.stack(
        [
            stamps[faint] * 0.05,  # the same galaxy 3.25 mag fainter: below the training range
            noisy_copies(models[:1], NOISE, 8.0, 0.0, seed=5)[0],  # 8x the calibrated noise: outside the trained depths
            noisy_copies(np.zeros((1, 64, 64), np.float32), NOISE, 1.0, 0.0, seed=6)[0] - 0.002,  # no source at all
        ]
    )
    checked = estimator.predict(extra)
    flags = checked["flags"]
    assert flags[0] & StampFlag.INPUT_OUT_OF_RANGE and flags[1] & StampFlag.INPUT_OUT_OF_RANGE
    assert flags[2] & StampFlag.NO_SOURCE and flags[2] & StampFlag.FAILED_VALIDATION
    assert np.isnan(checked["mag"][2]) and np.isnan(checked["mag_err"][2]) and np.isfinite(checked["mag"][:2]).all()
    assert not (values["flags"] & StampFlag.NO_SOURCE).any()


def test_predict_writes_uncertainty_columns_with_units_and_flags_bad_stamps(production, tiny_noiseless, tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    from legato.io.stamps import load_split
    from legato.training.noisy_batches import noisy_copies

    folder, _ = production
    models, _, _ = load_split(tiny_noiseless / "test")
    stamps = noisy_copies(models[:12], NOISE, 0.5, 0.7, seed=8)
    stamps[3, 10, 10] = np.nan
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(stamps).writeto(cube)
    out = tmp_path / "catalogue.fits"
    result = CliRunner().invoke(app, ["predict", str(cube), "-o", str(out), "--model", str(folder), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = Table.read(out)
    for name, unit in (("mag_err", "mag"), ("re_arcsec_err", "arcsec"), ("re_arcsec_err95", "arcsec"), ("sky_sigma", "ct / s")):
        assert name in table.colnames and str(table[name].unit) == unit
    mag_err = np.ma.filled(table["mag_err"], np.nan)
    assert np.isnan(mag_err[3]) and table["flags"][3] & 1
    assert np.isfinite(np.delete(mag_err, 3)).all()


def test_served_production_model_returns_uncertainties(production, tiny_noiseless, tmp_path):
    from legato.io.stamps import load_split
    from legato.serving.server import model_server
    from legato.training.noisy_batches import noisy_copies

    folder, summary = production
    models, _, _ = load_split(tiny_noiseless / "test")
    stamps = noisy_copies(models[:3], NOISE, 1.0, 0.0, seed=9)
    with model_server(summary["model_uri"], log_path=tmp_path / "serve.log") as server:
        status, body = _post(server.url + "/invocations", json.dumps({"inputs": stamps.tolist()}).encode())
        assert status == 200, body
        row = body["predictions"][0]
        assert {"mag", "mag_err", "re_arcsec_err95", "sky_sigma", "flags"} <= set(row) and row["mag_err"] > 0
        status, body = _post(server.url + "/invocations", json.dumps({"inputs": np.zeros((1, 32, 32)).tolist()}).encode())
        assert 400 <= status < 500 and body.get("message")
    assert server.process.poll() is not None


def _post(url: str, data: bytes):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_evaluate_production_reports_coverage_robustness_and_targets(production, tiny_noiseless, tiny_sim, tmp_path, repo_root):
    folder, _ = production
    reports = tmp_path / "reports"
    args = [
        "evaluate-production",
        "--params",
        str(repo_root / "params.yaml"),
        "--estimator",
        str(folder),
        "--noiseless",
        str(tiny_noiseless / "test"),
        "--test",
        str(tiny_sim / "test"),
        "--real",
        str(tmp_path / "none"),
        "--classical",
        str(tmp_path / "none.fits"),
        "--reports",
        str(reports),
        "--speed",
        str(tmp_path / "none.json"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((reports / "production.json").read_text())
    assert set(report["depths"]) == {"white", "correlated"} and set(report["depths"]["white"]) == {"0.25", "0.5", "1.0", "2.0"}
    coverage = report["depths"]["white"]["1.0"]["coverage"]["68"]["mag"]
    assert 0 <= coverage["all"] <= 1 and sum(b["count"] for b in coverage["bins"]) == 48
    assert set(report["targets"]) >= {"table1_full_range", "noise_robustness", "coverage"}
    assert (reports / "figures" / "production_reliability.png").stat().st_size > 10_000
    assert "production targets:" in result.output


def test_a_published_estimator_gets_a_run_in_a_new_store(production, tmp_path):
    from legato.registry.publish import track_estimator

    folder, summary = production
    same = track_estimator(folder, tmp_path / "same")
    assert same["reused"] and same["run_id"] == summary["run_id"]
    import mlflow

    session_store = mlflow.get_tracking_uri()
    try:
        other = track_estimator(folder, tmp_path / "copy", tracking_uri=f"sqlite:///{tmp_path / 'fresh.db'}")
    finally:
        mlflow.set_tracking_uri(session_store)  # the other tests keep the session's store
    assert not other["reused"] and other["original_run_id"] == summary["run_id"] and other["run_id"] != summary["run_id"]
    assert json.loads((tmp_path / "copy" / "run.json").read_text())["model_uri"] == other["model_uri"]


def test_binned_calibration_factors_follow_the_predicted_magnitude():
    from legato.models.uncertainty import binned_calibration_scales, scale_for

    rng = np.random.default_rng(3)
    mean = np.zeros((4000, 1))
    sigma = np.ones((4000, 1))
    predicted_mag = np.where(np.arange(4000) < 2000, 19.0, 23.0)
    truth = rng.normal(0.0, np.where(predicted_mag < 21, 2.0, 1.0))[:, None]  # bright: errors twice the predicted sigma
    noise = np.where(np.arange(4000) % 2 == 0, 0.5, 2.0)
    truth[noise > 1] *= 1.5  # at high noise the errors are 1.5x larger again
    calibration = binned_calibration_scales(truth, mean, sigma, predicted_mag, [21.0], noise, [1.0])
    np.testing.assert_allclose(np.array(calibration["68"])[:, :, 0], [[2.0, 1.0], [3.0, 1.5]], rtol=0.1)
    factors = scale_for(calibration, "68", np.array([18.0, 22.5, 22.5]), np.array([0.3, 0.3, 1.7]))
    np.testing.assert_allclose(factors[:, 0], np.array(calibration["68"])[[0, 0, 1], [0, 1, 1], 0])
    few = binned_calibration_scales(truth[:150], mean[:150], sigma[:150], predicted_mag[:150], [21.0])  # 0 faint galaxies: global
    assert few["68"][0][1] == few["68"][0][0]


def test_spark_engine_returns_the_production_columns_and_flags(production, tiny_noiseless, tmp_path):
    pytest.importorskip("pyspark")
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from legato.inference.predict import predict_stamps
    from legato.inference.spark import predict_spark, spark_session
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.training.noisy_batches import noisy_copies

    folder, summary = production
    models, _, _ = load_split(tiny_noiseless / "test")
    stamps = noisy_copies(models[:10], NOISE, 1.0, 0.7, seed=12)
    stamps[2] = noisy_copies(np.zeros((1, 64, 64), np.float32), NOISE, 1.0, 0.0, seed=6)[0] - 0.002  # no source
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(
        pa.table({"id": np.arange(10), "stamp": pa.array([s.ravel() for s in stamps], type=pa.list_(pa.float32()))}), shards / "s.parquet"
    )
    session = spark_session("local[2]", app_name="legato-production-test")
    try:
        report = predict_spark(session, summary["model_uri"], shards, tmp_path / "out")
    finally:
        session.stop()
    frame = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    local, flags = predict_stamps(LoadedEstimator(folder), stamps, np.zeros(len(stamps), np.int32), None)  # the local path's rows
    local["flags"] = flags
    assert {"mag_err", "n_err95", "sky_sigma", "mag_aper"} <= set(frame.columns) and report["flag_counts"]["NO_SOURCE"] == 1
    np.testing.assert_array_equal(frame["flags"].to_numpy(), local["flags"])
    np.testing.assert_allclose(frame["mag_err"].to_numpy(), local["mag_err"], rtol=1e-4)
