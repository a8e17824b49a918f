"""Networks, target transforms, input validation and metrics."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from legato.errors import DataError
from legato.models.estimator import validate_stamps
from legato.models.targets import TargetScaler, physical_columns
from legato.stats import binned_statistics, r2_score, robust_sigma


def test_arch1_and_arch2_have_named_blocks_and_outputs():
    from legato.models.architectures import build_arch1, build_arch2

    arch1, arch2 = build_arch1(), build_arch2()
    names1 = {layer.name for layer in arch1.layers}
    names2 = {layer.name for layer in arch2.layers}
    assert {"asinh_scaling", "input_noise", "block1_conv1", "block1_dropout", "unit1_conv1", "dense1", "dense2", "estimate"} <= names1
    assert "block2_conv1" not in names1 and {"block2_conv1", "block2_dropout"} <= names2
    assert not any(name.startswith("unit") and "dropout" in name for name in names1 | names2)
    assert arch1.output_shape == (None, 4) and arch2.input_shape == (None, 64, 64)
    for layer in arch2.layers:
        if layer.name.startswith("block"):
            layer.trainable = False
    assert arch2.get_layer("block1_conv1").trainable is False and arch2.get_layer("estimate").trainable is True


def test_saved_network_reloads_with_its_custom_scaling(tmp_path):
    import keras

    from legato.models.architectures import build_arch1

    model = build_arch1(n_outputs=2)
    x = np.random.default_rng(0).normal(scale=0.01, size=(3, 64, 64)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_target_scaler_round_trip(tmp_path):
    labels = Table({"mag": [20.0, 22.0, 24.0], "re_arcsec": [0.1, 0.3, 0.9], "n": [0.5, 1.0, 4.0], "ellipticity": [0.1, 0.5, 0.2]})
    scaler = TargetScaler.fit(labels)
    z = scaler.transform(labels)
    assert z.shape == (3, 4) and np.allclose(z.mean(axis=0), 0, atol=1e-6)
    scaler.to_json(tmp_path / "s.json")
    back = TargetScaler.from_json(tmp_path / "s.json").inverse(z)
    for name in ("mag", "re_arcsec", "n", "ellipticity"):
        np.testing.assert_allclose(back[name], labels[name], rtol=1e-5)
    physical = physical_columns(back)
    assert list(physical) == ["mag", "re_arcsec", "n", "q", "ellipticity"]
    np.testing.assert_allclose(physical["q"], 1 - np.asarray(labels["ellipticity"]), rtol=1e-5)


def test_missing_label_column_is_named():
    with pytest.raises(DataError, match="label column 'n' is missing"):
        TargetScaler.fit(Table({"mag": [1.0], "re_arcsec": [1.0], "ellipticity": [0.1]}))


@pytest.mark.parametrize(
    ("stamps", "message"),
    [
        (np.zeros((2, 32, 32)), r"shape \(N, 64, 64\), got \(2, 32, 32\)"),
        (np.zeros((0, 64, 64)), "empty batch"),
        (np.array([["a"] * 64] * 64), "pixels must be numbers, got strings"),
        (np.ones((1, 64, 64), dtype=bool), "pixels must be numbers, got booleans"),
        (np.full((2, 64, 64), np.nan), r"stamps \[0, 1\] contain NaN or inf"),
        (np.zeros((5, 64, 64)), "batch of 5 stamps exceeds the limit of 4"),
    ],
)
def test_invalid_stamps_are_rejected_with_a_precise_message(stamps, message):
    with pytest.raises(DataError, match=message):
        validate_stamps(stamps, 64, max_batch=4)


def test_single_stamp_is_promoted_to_a_batch():
    assert validate_stamps(np.zeros((64, 64), np.float64), 64).shape == (1, 64, 64)


def test_metrics():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=2000)
    assert r2_score(truth, truth) == 1.0
    assert r2_score(truth, np.full_like(truth, truth.mean())) == pytest.approx(0.0)
    assert robust_sigma(rng.normal(scale=2.0, size=200_000)) == pytest.approx(2.0, rel=0.01)
    table = Table({"mag": [20.5, 20.6, 22.5], "re_arcsec": [1.0, 1.0, 1.0], "n": [1.0, 1.0, 1.0], "ellipticity": [0.2, 0.2, 0.2]})
    est = Table({"mag": [20.4, 20.4, 22.5], "re_arcsec": [0.9, 0.5, 1.0], "n": [1.0, 1.0, 1.0], "ellipticity": [0.2, 0.2, 0.2]})
    stats = binned_statistics(table, est, [20.0, 21.0, 22.0, 23.0])
    assert stats["mag"][0]["count"] == 2 and stats["mag"][0]["bias"] == pytest.approx(0.15)
    assert stats["re"][0]["outlier_fraction"] == 0.5 and stats["mag"][1]["count"] == 0


def test_averaged_passes_shrink_their_intervals_by_what_the_average_removes():
    from legato.symmetry import SUFFIX_SIGMAS, average_estimates

    rng = np.random.default_rng(4)
    k, n = 8, 2000
    shared = rng.normal(0.0, 0.6, n)  # the stamp's own error, the same in every flip
    passes = []
    for _ in range(k):
        own = rng.normal(0.0, 0.8, n)  # orientation-dependent error: sigma**2 = 0.36 + 0.64 = 1
        passes.append(
            {
                "mag": 20.0 + shared + own,
                "mag_err": np.full(n, SUFFIX_SIGMAS["_err"]),
                "mag_err95": np.full(n, SUFFIX_SIGMAS["_err95"]),  # Gaussian errors: 1.96 sigma
                "re_arcsec": np.full(n, 0.5),
                "re_arcsec_err": np.full(n, 0.05),
                "flags": np.arange(n),
            }
        )
    averaged = average_estimates(passes)
    np.testing.assert_allclose(averaged["mag"], np.mean([p["mag"] for p in passes], axis=0))
    # the error of the average has variance 0.36 + 0.64 / 8 = 0.44: the shrunk half-widths cover 68% of it
    error = averaged["mag"] - 20.0
    assert 0.64 < np.mean(np.abs(error) <= averaged["mag_err"]) < 0.72
    np.testing.assert_allclose(averaged["mag_err95"], SUFFIX_SIGMAS["_err95"] / SUFFIX_SIGMAS["_err"] * averaged["mag_err"])
    assert np.all(averaged["mag_err"] >= SUFFIX_SIGMAS["_err"] / np.sqrt(k) - 1e-12)  # never narrower than independent passes
    # identical passes (no orientation-dependent error) keep their intervals; other columns are the first pass's
    np.testing.assert_allclose(averaged["re_arcsec_err"], 0.05)
    np.testing.assert_array_equal(averaged["flags"], passes[0]["flags"])


def test_heavy_tails_of_the_stamps_own_error_keep_the_averaged_95_percent_intervals_honest():
    """The 95% half-width of heavy-tailed errors is more than 1.96 times the 68% one; the tails are the stamp's own
    (shared by every flip), so averaging removes the same variance from both and the 95% interval shrinks less."""
    from legato.symmetry import average_estimates

    rng = np.random.default_rng(5)
    k, n = 8, 20000
    shared = 0.3 * rng.standard_t(2, n)
    passes = [20.0 + shared + rng.normal(0.0, 0.5, n) for _ in range(k)]
    one = np.abs(passes[0] - 20.0)
    half68, half95 = np.quantile(one, 0.6827), np.quantile(one, 0.95)  # calibrated on one pass
    assert half95 > 2.2 * half68
    averaged = average_estimates([{"mag": p, "mag_err": np.full(n, half68), "mag_err95": np.full(n, half95)} for p in passes])
    error = np.abs(averaged["mag"] - 20.0)
    assert 0.66 < np.mean(error <= averaged["mag_err"]) < 0.71
    assert 0.935 < np.mean(error <= averaged["mag_err95"]) < 0.965
    assert np.all(averaged["mag_err95"] / half95 >= averaged["mag_err"] / half68 - 1e-9)
