"""The deblended estimator (legato.models.deblending, legato deblend): build, rows, every inference path, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from legato.errors import ConfigError


def _crowded(stamps: np.ndarray, shift: int = 12) -> np.ndarray:
    """Each stamp with the brightest stamp of the set added ``shift`` pixels to its side: a neighbour of every target."""
    brightest = stamps[int(np.argmax(stamps.sum(axis=(1, 2))))]
    return (stamps + np.roll(brightest, shift, axis=1)[None]).astype(np.float32)


@pytest.fixture(scope="module")
def blended_set(tiny_sim, tmp_path_factory):
    """The toy test set with a neighbour added to every stamp, written as a labelled set (the toy pool B)."""
    from legato.io.stamps import StampSetMeta, load_split, write_stamp_set

    stamps, labels, _ = load_split(tiny_sim / "test")
    out = tmp_path_factory.mktemp("blended") / "set"
    meta = StampSetMeta(pixel_scale=0.06, zeropoint=25.9463, band="F160W", psf_id="test", domain="realistic")
    write_stamp_set(out, _crowded(stamps), labels, meta)
    return out


@pytest.fixture(scope="module")
def deblended(production, blended_set, repo_root, tmp_path_factory):
    """`legato deblend` on the toy production estimator, its BLENDED intervals calibrated on the crowded toy set."""
    from typer.testing import CliRunner

    from legato.cli import app

    out = tmp_path_factory.mktemp("deblended")
    params = json.loads(json.dumps(__import__("yaml").safe_load((repo_root / "params.yaml").read_text())))
    params["deblend"]["calibration"] = str(blended_set)
    params["deblend"]["min_rows"] = 5  # the toy set holds 16 stamps
    (out / "params.yaml").write_text(__import__("yaml").safe_dump(params))
    command = ["deblend", "--params", str(out / "params.yaml"), "--base", str(production[0]), "--out", str(out / "estimator")]
    result = CliRunner().invoke(app, [*command, "--report", str(out / "deblend.json")])
    assert result.exit_code == 0, result.output
    return out / "estimator", json.loads((out / "deblend.json").read_text())


def test_deblend_writes_the_base_with_its_settings_lineage_and_blended_calibration(deblended, production):
    from legato.models.estimator import LoadedEstimator
    from legato.tracking import training_domain

    folder, summary = deblended
    manifest = json.loads((folder / "estimator.json").read_text())
    assert manifest["kind"] == "deblended" and manifest["architecture"] == "production+deblended"
    assert manifest["deblend"]["grow_pix"] == summary["grow_pix"] >= 0
    assert training_domain(manifest["training"]["recipe"]) == "sim-noise-range+deblended"
    factors = manifest["blended_calibration"]
    assert factors == summary["blended_calibration"] and factors["rows"] == summary["calibration_blended_rows"] >= 20
    assert set(factors["68"]) == set(factors["95"]) == {"mag", "re_arcsec", "n", "ellipticity"}
    assert all(np.isfinite(factors[level][name]) and factors[level][name] > 0 for level in ("68", "95") for name in factors[level])
    loaded, base = LoadedEstimator(folder), LoadedEstimator(production[0])
    assert loaded.output_columns == base.output_columns and loaded.deblends and not base.deblends and loaded.measures_blends


def test_a_deblended_estimator_measures_the_stamps_without_their_neighbours(deblended, production, tiny_sim):
    from legato.flags import BLENDED
    from legato.io.stamp_checks import blend_measurements
    from legato.io.stamps import load_split
    from legato.models.deblending import deblended_inputs
    from legato.models.estimator import LoadedEstimator

    stamps, _, _ = load_split(tiny_sim / "test")
    crowded = _crowded(stamps)
    rows = LoadedEstimator(deblended[0]).predict(crowded)
    base = LoadedEstimator(production[0])
    fraction, blended, neighbour_map = blend_measurements(crowded, with_map=True)
    expected = base.predict(deblended_inputs(crowded, neighbour_map, deblended[1]["grow_pix"]), blend=(fraction, blended))
    flagged = (rows["flags"] & BLENDED) > 0
    np.testing.assert_array_equal(flagged, blended)  # the flag says what the stamp held, not what the network saw
    np.testing.assert_array_equal(rows["neighbour_fraction"], fraction)
    assert flagged.any()
    for name in ("mag", "re_arcsec", "n", "ellipticity"):
        np.testing.assert_array_equal(rows[name], expected[name])
    factor = deblended[1]["blended_calibration"]["68"]["mag"]
    np.testing.assert_allclose(rows["mag_err"][flagged], expected["mag_err"][flagged] * factor)
    np.testing.assert_array_equal(rows["mag_err"][~flagged], expected["mag_err"][~flagged])
    # isolated stamps hold no neighbour: the base's own rows
    alone = LoadedEstimator(deblended[0]).predict(stamps)
    clean = ~((alone["flags"] & BLENDED) > 0) & ~blend_measurements(stamps, with_map=True)[2].any(axis=(1, 2))
    np.testing.assert_array_equal(alone["mag"][clean], base.predict(stamps)["mag"][clean])


def test_checks_run_ahead_and_the_served_model_give_the_rows_of_predict(deblended, tiny_sim, tmp_path):
    """`legato predict` measures the next chunk's blends (with the neighbour map) in its reader thread; the MLflow model
    (what `mlflow models serve` loads) runs the same rows."""
    import mlflow

    from legato.inference.predict import check_chunk, predict_stamps
    from legato.io.stamps import load_split
    from legato.models.deblending import deblended_inputs
    from legato.models.estimator import LoadedEstimator
    from legato.serving.pyfunc import save_estimator_model

    stamps, _, _ = load_split(tiny_sim / "test")
    crowded = _crowded(stamps)[:12]
    estimator = LoadedEstimator(deblended[0])
    flags = np.zeros(len(crowded), dtype=np.int32)
    checks = check_chunk(estimator, crowded, flags)
    # the neighbour map and the stamps without their neighbours, prepared with the measurement
    assert len(checks.blend) == 4 and checks.blend[2].shape[0] == len(crowded)
    grow = int(estimator.deblend["grow_pix"])
    np.testing.assert_array_equal(checks.blend[3], deblended_inputs(crowded, checks.blend[2], grow))
    inline, inline_flags = predict_stamps(estimator, crowded, flags, None)
    ahead, ahead_flags = predict_stamps(estimator, crowded, flags, None, checks=checks)
    deblended_here = estimator.predict(crowded, checked=True, blend=checks.blend[:3])  # without the prepared stamps
    np.testing.assert_array_equal(ahead_flags, inline_flags)
    for name in inline:
        np.testing.assert_array_equal(ahead[name], inline[name])
        np.testing.assert_array_equal(np.asarray(deblended_here[name], dtype=np.float32), inline[name])
    model = mlflow.pyfunc.load_model(str(save_estimator_model(deblended[0], tmp_path / "model", stamps[:2])))
    served = model.predict(crowded)
    np.testing.assert_array_equal(served["flags"].to_numpy(), inline_flags)
    for name in ("mag", "re_arcsec", "n", "ellipticity_err95"):
        np.testing.assert_allclose(served[name].to_numpy(), inline[name], rtol=1e-5, equal_nan=True)


def test_deblend_refuses_a_base_without_input_checks_a_deblended_base_and_a_set_without_labels(deblended, trained, tiny_sim, tmp_path):
    from legato.models.deblending import write_deblended_estimator
    from legato.training.deblend import build_deblended

    with pytest.raises(ConfigError, match="flags blends"):
        write_deblended_estimator(trained[0] / "arch1", tmp_path / "arch1_deblended", 2)
    with pytest.raises(ConfigError, match="flags blends"):
        write_deblended_estimator(deblended[0], tmp_path / "twice", 2)
    with pytest.raises(ConfigError, match="grow_pix"):
        write_deblended_estimator(deblended[0] / "base", tmp_path / "negative", -1)
    assert not any((tmp_path / name).exists() for name in ("arch1_deblended", "twice", "negative"))
    with pytest.raises(ConfigError, match="at least 20 usable rows"):
        build_deblended(deblended[0] / "base", tmp_path / "few", 2, tiny_sim / "test", max_stamps=5)


def test_symmetries_average_the_passes_of_the_flipped_stamps_and_their_flipped_neighbour_map(deblended, tiny_sim):
    from legato.io.stamps import load_split
    from legato.models.estimator import LoadedEstimator
    from legato.symmetry import dihedral

    folder, _ = deblended
    stamps, _, _ = load_split(tiny_sim / "test")
    crowded = _crowded(stamps)
    single, averaged = LoadedEstimator(folder), LoadedEstimator(folder, symmetries=2)
    blend = single.measure_blends(crowded)
    codes = np.ones(len(crowded), dtype=int)
    first = single.predict(crowded, blend=blend)
    second = single.predict(dihedral(crowded, codes), blend=(*blend[:2], dihedral(blend[2], codes)))
    rows = averaged.predict(crowded)
    np.testing.assert_allclose(rows["mag"], (first["mag"] + second["mag"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(rows["re_arcsec"], np.sqrt(first["re_arcsec"] * second["re_arcsec"]), rtol=1e-6)
    np.testing.assert_allclose(rows["q"], 1.0 - rows["ellipticity"], rtol=1e-6)
    # the passes' half-widths, averaged, then shrunk by the orientation-dependent variance the two passes show
    width = (np.asarray(first["n_err"], float) + np.asarray(second["n_err"], float)) / 2
    sigma2 = (width / rows["n"]) ** 2
    between = np.log(np.asarray(first["n"], float) / np.asarray(second["n"], float)) ** 2 / 2
    shrunk = width * np.sqrt(np.maximum(sigma2 - between / 2, sigma2 / 2) / sigma2)
    np.testing.assert_allclose(rows["n_err"], shrunk, rtol=1e-5)
    assert np.all(rows["n_err"] <= width * (1 + 1e-9))
    # what describes the stamp as given is not averaged
    np.testing.assert_array_equal(rows["flags"], first["flags"])
    np.testing.assert_array_equal(rows["neighbour_fraction"], first["neighbour_fraction"])
