"""Training and evaluation at toy scale, with a real MLflow store and the logged pyfunc model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from legato.flags import StampFlag
from legato.training.config import TrainConfig


def test_training_logs_a_complete_mlflow_run(trained):
    import mlflow

    out, summaries = trained
    run = mlflow.get_run(summaries["arch1"]["run_id"])
    assert run.data.tags["architecture"] == "arch1" and run.data.tags["training_domain"] == "sim"
    assert run.data.tags["git_revision"] and "data_version" in run.data.tags
    assert run.data.params["mode"] == "multi_output" and run.data.params["n_train"] == "96"
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    for p in ("mag", "re", "n", "ellipticity"):
        assert np.isfinite(run.data.metrics[f"val_r2_{p}"])
    assert (out / "arch1" / "estimator.json").is_file() and not (out / "arch1.partial").exists()
    # the saved network is the inference-mode recalibrated one: no dropout left to shift its output
    from legato.models.estimator import LoadedEstimator

    network = LoadedEstimator(out / "arch1").members[0][0]
    assert network.get_layer("block1_dropout").rate == 0.0
    assert len(mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "recalibration_loss")) == 1


def test_logged_model_takes_raw_stamps_and_returns_physical_parameters(trained, tiny_sim):
    import mlflow
    from mlflow.exceptions import MlflowException

    from legato.io.stamps import read_stamp_set

    _, summaries = trained
    model = mlflow.pyfunc.load_model(summaries["arch2"]["model_uri"])
    stamps, _, _ = read_stamp_set(tiny_sim / "test")
    frame = model.predict(stamps[:5])
    assert list(frame.columns) == ["mag", "re_arcsec", "n", "q", "ellipticity", "flags"] and len(frame) == 5
    assert np.all(frame["re_arcsec"] > 0) and np.all(frame["n"] > 0)
    np.testing.assert_allclose(frame["q"] + frame["ellipticity"], 1.0, rtol=1e-6)
    bad = stamps[:2].copy()
    bad[1, 3, 3] = np.nan  # a flagged row of NaN values, as `legato predict` writes it
    flagged = model.predict(bad)
    assert flagged["flags"].tolist()[1] == StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION and flagged.iloc[1, :5].isna().all()
    with pytest.raises(MlflowException, match=r"shape"):  # a wrong shape is refused (by the signature first)
        model.predict(np.zeros((2, 32, 32), np.float32))


def test_per_parameter_mode_trains_one_network_per_target(tiny_sim, tmp_path):
    from legato.models.estimator import LoadedEstimator
    from legato.training.train import train

    config = TrainConfig(arch="arch1", mode="per_parameter", epochs=1, batch_size=32, targets=("mag", "n"))
    train(config, tiny_sim, tmp_path / "pp")
    manifest = json.loads((tmp_path / "pp" / "estimator.json").read_text())
    assert [m["targets"] for m in manifest["members"]] == [["mag"], ["n"]]
    values = LoadedEstimator(tmp_path / "pp").predict(np.zeros((2, 64, 64), np.float32))
    assert set(values) == {"mag", "n"}


def test_evaluation_writes_table1_figure3_and_logs_to_the_runs(trained, tiny_sim, tmp_path):
    import mlflow

    from legato.evaluation.evaluate import evaluate

    out, summaries = trained
    table1 = evaluate(
        tiny_sim / "test",
        {"arch1": out / "arch1", "arch2": out / "arch2"},
        None,
        {"paper_h23": 23.0, "full_h245": 24.5},
        [16.0, 21.0, 23.0, 24.5],
        reports_dir=tmp_path / "reports",
        predictions_dir=tmp_path / "predictions",
    )
    written = json.loads((tmp_path / "reports" / "table1.json").read_text())
    assert set(written["arch1"]) == {"mag", "re", "n", "ellipticity"} == set(written["full_h245"]["arch2"])
    assert written["paper_reference"]["arch2"]["mag"] == 0.996
    assert written["n_test"]["full_h245"] == 48 and table1["n_test"]["paper_h23"] < 48
    assert (tmp_path / "reports" / "figures" / "figure3.png").stat().st_size > 10_000
    assert (tmp_path / "predictions" / "arch1_test.fits").is_file()
    evaluation = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    from legato.io.stamps import read_stamp_set

    true_mag = np.asarray(read_stamp_set(tiny_sim / "test")[1]["mag"])
    expected = [int(np.sum((true_mag >= lo) & (true_mag < hi))) for lo, hi in [(16, 21), (21, 23), (23, 24.5)]]
    assert [row["count"] for row in evaluation["binned"]["arch1"]["mag"]] == expected
    run = mlflow.get_run(summaries["arch1"]["run_id"])
    assert "test_r2_mag_paper_h23" in run.data.metrics and "test_r2_n_full_h245" in run.data.metrics


def test_unknown_architecture_is_a_config_error():
    from legato.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown architecture 'arch9'"):
        TrainConfig(arch="arch9")
