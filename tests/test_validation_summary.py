"""Per-stamp summary statistics respond to the corruptions the validation suites must catch."""

from __future__ import annotations

import numpy as np
import pytest

from legato.validation.summary import COLUMNS, stamp_summary

ZP = 25.9463


@pytest.fixture(scope="module")
def test_stamps(tiny_sim):
    from legato.io.stamps import read_stamp_set

    stamps, labels, header = read_stamp_set(tiny_sim / "test")
    return stamps.astype(np.float64), labels, header


def test_summary_has_every_column_and_tracks_the_truth(test_stamps):
    stamps, labels, header = test_stamps
    summary = stamp_summary(stamps, ZP)
    assert set(summary) == set(COLUMNS) and all(len(v) == len(stamps) for v in summary.values())
    bright = np.asarray(labels["mag"]) < 22
    assert np.all(np.abs(summary["mag_aperture"][bright] - np.asarray(labels["mag"])[bright]) < 0.3)
    assert np.median(summary["noise_sigma"]) == pytest.approx(header["SKYSIG"], rel=0.1)
    assert np.all(summary["finite_fraction"] == 1.0) and np.all(summary["height"] == 64)
    assert np.median(summary["centroid_offset"][bright]) < 1.0


def test_summary_moves_under_known_corruptions(test_stamps):
    stamps, _, header = test_stamps
    clean = stamp_summary(stamps, ZP)
    rng = np.random.default_rng(0)
    noisy = stamp_summary(stamps + rng.normal(0.0, np.sqrt(3) * header["SKYSIG"], stamps.shape), ZP)
    assert np.median(noisy["noise_sigma"]) == pytest.approx(2 * np.median(clean["noise_sigma"]), rel=0.1)
    offset = stamp_summary(stamps + 3 * header["SKYSIG"], ZP)
    assert np.median(offset["background"]) == pytest.approx(np.median(clean["background"]) + 3 * header["SKYSIG"], abs=1e-3)
    brighter = stamp_summary(stamps * 10**0.4, ZP)
    assert np.median(brighter["mag_aperture"] - clean["mag_aperture"]) == pytest.approx(-1.0, abs=0.05)
    shifted = stamp_summary(np.roll(stamps, 6, axis=2), ZP)
    assert np.median(shifted["centroid_offset"]) > np.median(clean["centroid_offset"]) + 3
    broken = stamps.copy()
    broken[0, 10:12, 10:12] = np.nan
    assert stamp_summary(broken, ZP)["finite_fraction"][0] < 1.0
    with pytest.raises(ValueError, match="expected a"):
        stamp_summary(stamps[0], ZP)
