"""Noise texture, photutils segmentation and the realism check of the realistic domain against real UDS data."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from legato.analysis.noise_texture import (
    HOLE_FRACTION_LIMIT,
    has_negative_holes,
    kernel_lag_correlation,
    kernel_sigma_for_correlation,
    negative_hole_fraction,
    noise_autocorrelation,
    noise_statistics,
)
from legato.analysis.segmentation import central_label, segment_stamp
from legato.cli import app
from legato.simulation.noise import correlated_noise


def test_measured_correlation_follows_the_kernel_and_the_kernel_inverts():
    rng = np.random.default_rng(1)
    for kernel in (0.0, 0.5, 0.665, 0.9):
        field = correlated_noise((256, 256), 0.006, kernel, rng)
        stats = noise_statistics(field)
        assert stats.sigma == pytest.approx(0.006, rel=0.05)
        # the 3-sigma clip lowers the estimate a little: within 0.03 of the kernel's exact correlation
        assert stats.correlation[1] == pytest.approx(kernel_lag_correlation(kernel, 1), abs=0.03)
        assert stats.correlation[2] == pytest.approx(kernel_lag_correlation(kernel, 2), abs=0.03)
    for target in (0.3, 0.54, 0.8):
        assert kernel_lag_correlation(kernel_sigma_for_correlation(target), 1) == pytest.approx(target, abs=2e-3)
    assert kernel_sigma_for_correlation(0.0) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 0.95\]"):
        kernel_sigma_for_correlation(0.99)


def test_masked_and_non_finite_pixels_are_left_out_of_the_correlation():
    rng = np.random.default_rng(2)
    field = rng.normal(0.0, 1.0, (128, 128))
    smooth = np.zeros_like(field)
    smooth[:, :64] = np.linspace(-0.5, 0.5, 64)[None, :]  # a perfectly correlated half, masked below
    mask = np.zeros(field.shape, dtype=bool)
    mask[:, :64] = True
    combined = np.where(mask, smooth, field)
    combined[5, 70] = np.nan
    assert abs(noise_autocorrelation(combined, mask)[1]) < 0.05
    assert noise_autocorrelation(combined)[1] > 0.1  # unmasked, the smooth half correlates the pairs


def test_negative_holes_are_counted_against_the_noise():
    rng = np.random.default_rng(3)
    clean = rng.normal(0.0, 0.006, (64, 64))
    assert negative_hole_fraction(clean, 0.006) < 0.001 and not has_negative_holes(clean, 0.006)
    holed = clean.copy()
    holed[10:16, 10:16] = -0.05  # 36 pixels at -8 sigma
    assert negative_hole_fraction(holed, 0.006) == pytest.approx(36 / 4096, abs=2 / 4096)
    assert has_negative_holes(holed, 0.006) and 36 / 4096 > HOLE_FRACTION_LIMIT
    assert np.isnan(negative_hole_fraction(holed, 0.0))


def _gaussian(shape, y, x, width, peak):
    yy, xx = np.indices(shape)
    return peak * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / width**2)


def test_segmentation_masks_a_blended_neighbour_and_keeps_the_sky_apart():
    rng = np.random.default_rng(4)
    target = _gaussian((64, 64), 32, 32, 3.0, 0.5)
    neighbour = _gaussian((64, 64), 32, 44, 2.5, 1.0)  # touching the target
    far = _gaussian((64, 64), 8, 8, 1.5, 0.3)
    image = target + neighbour + far + correlated_noise((64, 64), 0.01, 0.665, rng)
    seg = segment_stamp(image, 0.01)
    assert seg.target == seg.labels[32, 32] and seg.n_neighbours == 2
    assert seg.neighbour_mask[32, 44] and seg.neighbour_mask[8, 8] and not seg.neighbour_mask[30:35, 29:35].any()
    assert seg.source_mask[32, 32] and not seg.source_mask[55:, 40:].all()
    assert segment_stamp(rng.normal(0, 0.01, (64, 64)), 0.01).target == 0  # nothing at the centre
    with pytest.raises(ValueError, match="positive"):
        segment_stamp(image, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        segment_stamp(image[None], 0.01)


def test_a_constant_border_does_not_zero_the_noise_estimate():
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 0.01, (64, 64)) + _gaussian((64, 64), 32, 32, 3.0, 0.5)
    image[:20] = 1.6e-4  # a no-data band left after sky subtraction
    seg = segment_stamp(image)
    assert seg.target > 0 and not seg.neighbour_mask[20:, :].all()


def test_central_label_takes_the_nearest_segment_within_reach():
    labels = np.zeros((11, 11), dtype=int)
    labels[5, 8] = 3
    assert central_label(labels) == 3
    assert central_label(labels, max_distance_pix=2.0) == 0


@pytest.fixture(scope="module")
def realistic_raw(tmp_path_factory, repo_root):
    """A small realistic domain with the project's calibrated noise (A 40, B 40)."""
    import yaml

    from legato.simulation.realistic import realistic_config, simulate_realistic
    from legato.simulation.settings import simulation_config  # noqa: F401  (params are read through the project's loader)

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["simulate"]["catalog"] = str(repo_root / params["simulate"]["catalog"])
    params["simulate"]["psf"] = str(repo_root / params["simulate"]["psf"])
    params["realistic"]["cosmos_dir"] = str(repo_root / params["realistic"]["cosmos_dir"])
    config = realistic_config(params, {"sizes": {"A": 40, "B": 40}})
    config = replace(config, kinds={"sersic": 0.2, "bulge_disc": 0.2, "clumpy": 0.1, "cosmos": 0.5})
    folder = tmp_path_factory.mktemp("realistic") / "raw"
    report = simulate_realistic(config, folder, workers=1, progress=False)
    return folder, report, config


def test_realistic_stamps_have_per_stamp_depth_and_no_holes(realistic_raw):
    from legato.io.stamps import read_stamp_set

    folder, report, config = realistic_raw
    stamps, labels, header = read_stamp_set(folder / "A")
    low, high = config.sky_sigma_range
    assert np.all((labels["sky_sigma"] >= low) & (labels["sky_sigma"] <= high)) and np.ptp(labels["sky_sigma"]) > 0
    assert header["SKYSIG"] == pytest.approx(np.median(labels["sky_sigma"]))
    assert report["stamps_with_negative_holes"] == {"A": 0, "B": 0}
    assert not any(has_negative_holes(s, v) for s, v in zip(stamps, labels["sky_sigma"]))
    redrawn = labels["cosmos_redraws"] > 0
    assert np.all(labels["cosmos_index"][labels["kind"] == "cosmos"] % 5 == 0)  # test A keeps its own COSMOS sources after redraws
    assert report["cosmos_redrawn_for_negative_holes"]["A"] == int(redrawn.sum())


def test_realism_command_compares_with_the_real_blocks_through_great_expectations(realistic_raw, repo_root, tmp_path):
    import yaml

    folder, _, _ = realistic_raw
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["realism"].update(
        blocks=str(repo_root / params["realism"]["blocks"]), suite=str(repo_root / params["realism"]["suite"]), min_stamps=50
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    report = tmp_path / "realism.json"
    result = CliRunner().invoke(
        app,
        [
            "realism",
            "--params",
            str(tmp_path / "params.yaml"),
            "--realistic",
            str(folder),
            "--real-stamps",
            str(tmp_path / "none"),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(report.read_text())
    real = written["real_residuals"]["median"]
    assert (
        written["real_residuals"]["blocks"] == 15 and 0.005 < real["noise_sigma"] < 0.007 and 0.45 < real["noise_correlation_1pix"] < 0.65
    )
    assert all(abs(r - 1) <= 0.2 for r in written["ratio_realistic_to_real"].values()) and written["suite"]["success"]
    assert {e["column"] for e in written["suite"]["expectations"]} >= {
        "noise_sigma",
        "noise_correlation_1pix",
        "noise_correlation_2pix",
        "negative_hole_fraction",
    }

    params["realism"]["tolerance"] = 0.001  # no simulation matches to 0.1%: the suite fails and the command says why
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    failed = CliRunner().invoke(
        app,
        [
            "realism",
            "--params",
            str(tmp_path / "params.yaml"),
            "--realistic",
            str(folder),
            "--real-stamps",
            str(tmp_path / "none"),
            "--report",
            str(report),
        ],
    )
    assert failed.exit_code != 0 and "does not match the real data" in failed.output and "Traceback" not in failed.output
    assert json.loads(report.read_text())["suite"]["success"] is False
