"""The photometric second stage (legato.models.refinement, legato refine): features, training, inference paths, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from legato.errors import ConfigError


def _base_columns(count: int, mag: float = 20.0, sky: float = 0.01) -> dict:
    return {
        "mag": np.full(count, mag),
        "re_arcsec": np.full(count, 0.3),
        "n": np.full(count, 1.5),
        "ellipticity": np.full(count, 0.2),
        "mag_err": np.full(count, 0.02),
        "re_arcsec_err": np.full(count, 0.01),
        "n_err": np.full(count, 0.1),
        "ellipticity_err": np.full(count, 0.02),
        "sky_sigma": np.full(count, sky),
    }


def test_features_are_the_curve_of_growth_relative_to_the_estimated_flux_and_the_moments():
    from legato.conventions import BAND, ZEROPOINT_AB, mag_to_flux
    from legato.models.refinement import GROWTH_RADII_PIX, MOMENT_RADII_PIX, stage_features

    size, zeropoint = 32, ZEROPOINT_AB[BAND]
    y, x = np.indices((size, size)) - size // 2
    round_blob = np.exp(-(x**2 + y**2) / (2 * 1.5**2))
    elongated = np.exp(-(x**2 / (2 * 3.0**2) + y**2 / (2 * 1.0**2)))
    flux = mag_to_flux(20.0, zeropoint)
    stamps = np.stack([round_blob / round_blob.sum() * flux, elongated / elongated.sum() * flux]).astype(np.float32)
    features = stage_features(stamps, _base_columns(2), zeropoint)
    growth = len(GROWTH_RADII_PIX)
    curve = features[:, 10 : 10 + growth]
    assert np.all(np.diff(curve, axis=1) >= -1e-6) and np.allclose(curve[:, -1], 1.0, atol=1e-3)  # all the flux by 23 px
    area = np.array([np.sum(np.hypot(x, y) <= r) for r in GROWTH_RADII_PIX])
    np.testing.assert_allclose(features[0, 10 + growth : 10 + 2 * growth], 0.01 * np.sqrt(area) / flux, rtol=1e-6)
    e_moment = features[:, 10 + 2 * growth : 10 + 2 * growth + len(MOMENT_RADII_PIX)]
    assert np.all(e_moment[0] < 1e-3) and np.all(e_moment[1, 1:] > 0.5)  # (9 - 1) / (9 + 1) inside wide apertures
    missing = _base_columns(2)
    missing["mag"] = np.array([20.0, np.nan])
    assert (
        np.isnan(stage_features(stamps, missing, zeropoint)[1]).any() and np.isfinite(stage_features(stamps, missing, zeropoint)[0]).all()
    )


@pytest.fixture(scope="module")
def refined(production, tiny_noiseless, repo_root, tmp_path_factory):
    """`legato refine` on the toy production estimator, trained on the tiny noiseless set made noisy (2 depths per galaxy)."""
    from typer.testing import CliRunner

    from legato.cli import app

    out = tmp_path_factory.mktemp("refined")
    command = ["refine", "--params", str(repo_root / "params.yaml"), "--base", str(production[0]), "--train", str(tiny_noiseless / "train")]
    command += ["--calibration", str(tiny_noiseless / "val"), "--out", str(out / "estimator"), "--report", str(out / "refine.json")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    return out / "estimator", json.loads((out / "refine.json").read_text())


def test_refine_writes_a_refined_estimator_with_its_base_lineage_and_calibrated_intervals(refined, production, tiny_noiseless):
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator

    folder, summary = refined
    manifest = json.loads((folder / "estimator.json").read_text())
    assert manifest["kind"] == "refined" and manifest["architecture"] == "production+refined"
    recipe = manifest["training"]["recipe"]
    _, labels, _ = load_split(tiny_noiseless / "train")
    bright = int(np.sum(np.asarray(labels["mag"]) < 21.0))  # params.yaml refine: 12 noisy copies below H = 21, else 2
    assert recipe["bright"] == {"mag": 21.0, "copies": 12}
    assert recipe["train_rows"] == summary["train_rows"] == 2 * 96 + 10 * bright and summary["calibration_rows"] == 3 * 32
    assert recipe["depths"] == {"sky_scale": [0.2, 2.5], "correlation_pix": [0.0, 0.4, 0.7, 1.0]}  # production.depths
    assert (folder / "base/estimator.json").is_file() and (folder / "refinement/stage.keras").is_file()
    calibration = json.loads((folder / "refinement/stage.json").read_text())["calibration"]
    assert len(calibration["68"][0]) == 6 and all(len(bin_) == 4 for bin_ in calibration["68"][0])  # 6 magnitude bins x 4 targets
    assert set(summary["val_r2_h23"]["refined"]) == {"mag", "re_arcsec", "n", "ellipticity"}
    loaded, base = LoadedEstimator(folder), LoadedEstimator(production[0])
    assert loaded.output_columns == base.output_columns and loaded.input_range == base.input_range


def test_refined_rows_differ_from_the_base_except_on_blended_rows(refined, production, tiny_sim):
    from legato.flags import BLENDED
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.models.refinement import RefinementStage

    stamps, _, _ = load_split(tiny_sim / "test")
    base = LoadedEstimator(production[0]).predict(stamps)
    rows = LoadedEstimator(refined[0]).predict(stamps)
    assert set(rows) == set(base)
    np.testing.assert_array_equal(rows["flags"], base["flags"])
    measured = np.isfinite(base["mag"]) & ((base["flags"] & BLENDED) == 0)
    assert np.all(rows["mag"][measured] != base["mag"][measured]) and np.all(rows["mag_err95"][measured] > rows["mag_err"][measured])
    np.testing.assert_allclose(rows["q"][measured], 1 - rows["ellipticity"][measured])
    flagged = {k: np.array(v, copy=True) for k, v in base.items()}
    flagged["flags"] = flagged["flags"] | BLENDED
    kept = RefinementStage.load(refined[0] / "refinement").apply(stamps, flagged, 25.9463)
    for name in ("mag", "re_arcsec", "n", "ellipticity", "q", "mag_err", "n_err95"):
        np.testing.assert_array_equal(kept[name], flagged[name])


def test_checks_run_ahead_of_the_network_give_the_rows_of_checks_run_inline(refined, tiny_sim):
    """`legato predict` measures the next chunk's stamp checks and blends in its reader thread: same rows, same flags."""
    from legato.flags import BLENDED
    from legato.inference.predict import StampChecks, check_chunk, predict_stamps
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator

    stamps, _, _ = load_split(tiny_sim / "test")
    stamps = stamps.copy()
    stamps[1] = 0.0  # blank: not predicted, so the blends are measured on the other rows only
    brightest = int(np.argmax(stamps.sum(axis=(1, 2))))
    stamps[2] += np.roll(stamps[brightest], 12, axis=1)  # a neighbour 12 pixels from the target
    estimator = LoadedEstimator(refined[0])
    assert estimator.measures_blends and estimator.base.measures_blends
    flags = np.zeros(len(stamps), dtype=np.int32)
    checks = check_chunk(estimator, stamps, flags)
    assert isinstance(checks, StampChecks) and not checks.predictable[1] and len(checks.blend[0]) == len(stamps) - 1
    inline, inline_flags = predict_stamps(estimator, stamps, flags, None)
    ahead, ahead_flags = predict_stamps(estimator, stamps, flags, None, checks=checks)
    np.testing.assert_array_equal(ahead_flags, inline_flags)
    assert np.any(inline_flags & BLENDED) and not np.any(flags)  # the caller's flags are not modified
    for name in inline:
        np.testing.assert_array_equal(ahead[name], inline[name])


def test_a_refined_estimator_is_served_and_predicted_like_any_other(refined, tiny_sim, tmp_path):
    """The MLflow model (what `mlflow models serve` loads) gives the rows of `legato predict`."""
    import mlflow

    from legato.inference.predict import predict_stamps
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.serving.pyfunc import save_estimator_model

    stamps, _, _ = load_split(tiny_sim / "test")
    model = mlflow.pyfunc.load_model(str(save_estimator_model(refined[0], tmp_path / "model", stamps[:2])))
    served = model.predict(stamps[:12])
    columns, flags = predict_stamps(LoadedEstimator(refined[0]), stamps[:12], np.zeros(12, dtype=np.int32), None)
    np.testing.assert_array_equal(served["flags"].to_numpy(), flags)
    for name in ("mag", "re_arcsec", "n", "ellipticity_err95"):
        np.testing.assert_allclose(served[name].to_numpy(), columns[name], rtol=1e-5, equal_nan=True)


def test_refinement_refuses_a_base_without_intervals_a_refined_base_and_other_apertures(refined, trained, tmp_path):
    import shutil

    from legato.models.refinement import RefinementStage, write_refined_estimator

    stage = RefinementStage.load(refined[0] / "refinement")
    with pytest.raises(ConfigError, match="plain estimator with uncertainties"):
        write_refined_estimator(trained[0] / "arch1", stage, tmp_path / "arch1_refined")
    with pytest.raises(ConfigError, match="plain estimator with uncertainties"):
        write_refined_estimator(refined[0], stage, tmp_path / "twice")
    assert not (tmp_path / "arch1_refined").exists() and not (tmp_path / "twice").exists()
    shutil.copytree(refined[0] / "refinement", tmp_path / "other")
    record = json.loads((tmp_path / "other/stage.json").read_text())
    record["growth_radii_pix"] = [1.0, 2.0]
    (tmp_path / "other/stage.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="other apertures"):
        RefinementStage.load(tmp_path / "other")


def test_the_shift_guard_keeps_the_base_rows_the_stage_would_move_too_far(refined, production, tiny_sim, tmp_path):
    from legato.flags import BLENDED
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.models.refinement import RefinementStage, stage_features

    stamps, _, _ = load_split(tiny_sim / "test")
    base = LoadedEstimator(production[0]).predict(stamps)
    stage = RefinementStage.load(refined[0] / "refinement")
    assert stage.max_shift_sigmas is None  # params.yaml refine: no guard
    shifts, _ = stage.residuals(stage_features(stamps, base, 25.9463))
    widths = np.column_stack(
        [base["mag_err"], base["re_arcsec_err"] / base["re_arcsec"], base["n_err"] / base["n"], base["ellipticity_err"]]
    )
    ratio = np.max(np.abs(shifts) / widths, axis=1)
    stage.max_shift_sigmas = float(np.nanmedian(ratio))
    stage.save(tmp_path / "guarded")
    guarded = RefinementStage.load(tmp_path / "guarded")
    assert guarded.max_shift_sigmas == stage.max_shift_sigmas
    rows = guarded.apply(stamps, base, 25.9463)
    moved = rows["mag"] != base["mag"]
    np.testing.assert_array_equal(moved, np.isfinite(ratio) & (ratio <= stage.max_shift_sigmas) & ((base["flags"] & BLENDED) == 0))
    for name in ("mag", "re_arcsec", "n_err95"):
        np.testing.assert_array_equal(rows[name][~moved], base[name][~moved])
    assert 0 < moved.sum() < len(stamps)


def test_bright_galaxies_get_more_noisy_copies(tiny_noiseless):
    from legato.io.stamps import load_split
    from legato.training.noisy_batches import DepthRange
    from legato.training.refine import noisy_rows

    _, labels, _ = load_split(tiny_noiseless / "train")
    cut = float(np.median(labels["mag"]))
    brighter = int(np.sum(np.asarray(labels["mag"]) < cut))
    plain_stamps, plain = noisy_rows(tiny_noiseless / "train", 2, DepthRange(), seed=3)
    stamps, rows = noisy_rows(tiny_noiseless / "train", 2, DepthRange(), seed=3, bright=(cut, 5))
    assert len(plain) == 2 * len(labels) and len(rows) == 2 * len(labels) + 3 * brighter
    assert np.all(np.asarray(rows["mag"][len(plain) :]) < cut) and stamps.shape[1:] == plain_stamps.shape[1:]
    np.testing.assert_array_equal(rows["id"][: len(plain)], plain["id"])
    _, same = noisy_rows(tiny_noiseless / "train", 2, DepthRange(), seed=3, bright=(cut, 2))  # no more than `copies`: unchanged
    assert len(same) == len(plain)
