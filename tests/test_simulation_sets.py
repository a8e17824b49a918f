"""Simulated sets: the parameter distribution, determinism, on-disk format."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy import units as u

from legato.catalog.vanderwel import read_vanderwel_catalog, select_good_fits
from legato.io.stamps import read_stamp_set
from legato.simulation.parameters import GALSIM_N_MAX, GALSIM_N_MIN, ParameterSpace, draw_parameters, snap_sersic_index
from legato.simulation.simulate import simulate


@pytest.fixture(scope="module")
def good_fits(raw_data):
    return select_good_fits(read_vanderwel_catalog(raw_data["catalog"]), 16.0, 24.5, 1.0)


def test_draws_follow_the_catalogue_joint_distribution(good_fits):
    drawn = draw_parameters(good_fits, 20_000, ParameterSpace(), np.random.default_rng(0))
    assert drawn["re_arcsec"].unit == u.arcsec and drawn["mag"].unit == u.mag
    assert drawn["mag"].max() <= 24.5 and drawn["re_arcsec"].max() <= 1.0
    for name, column in (("mag", "mag"), ("re", "re_arcsec"), ("q", "q")):
        cat = np.asarray(good_fits[name], float)
        sim = np.asarray(drawn[column], float)
        assert np.median(sim) == pytest.approx(np.median(cat), rel=0.05), name
    # the size-magnitude correlation of real galaxies survives the smoothed bootstrap
    cat_corr = np.corrcoef(good_fits["mag"], np.log(good_fits["re"]))[0, 1]
    sim_corr = np.corrcoef(drawn["mag"], np.log(drawn["re_arcsec"]))[0, 1]
    assert sim_corr == pytest.approx(cat_corr, abs=0.05)
    assert np.all((drawn["n"] >= GALSIM_N_MIN) & (drawn["n"] <= GALSIM_N_MAX))
    assert np.allclose(drawn["ellipticity"], 1 - drawn["q"])


def test_paper_subset_is_selectable(good_fits):
    drawn = draw_parameters(good_fits, 2_000, ParameterSpace(mag_max=23.0), np.random.default_rng(1))
    assert drawn["mag"].max() <= 23.0


def test_sersic_index_grid_is_logarithmic_and_clipped():
    snapped = snap_sersic_index([0.2, 1.0, 1.013, 4.0, 8.0], 0.005)
    assert snapped[0] == GALSIM_N_MIN and snapped[-1] == GALSIM_N_MAX
    assert snapped[1] == pytest.approx(1.0)
    assert abs(np.log10(snapped[2] / 1.013)) <= 0.0025 + 1e-12


def test_simulation_is_deterministic_and_independent_of_worker_count(sim_config, tmp_path):
    simulate(sim_config, tmp_path / "one", workers=1, progress=False)
    simulate(sim_config, tmp_path / "two", workers=2, progress=False)
    for split in ("train", "val", "test"):
        a, la, _ = read_stamp_set(tmp_path / "one" / split)
        b, lb, _ = read_stamp_set(tmp_path / "two" / split)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.asarray(la["mag"]), np.asarray(lb["mag"]))
    other = replace(sim_config, seed=sim_config.seed + 1)
    simulate(other, tmp_path / "other", workers=1, progress=False)
    c, _, _ = read_stamp_set(tmp_path / "other" / "train")
    assert not np.array_equal(a, c)


def test_stamp_sets_carry_headers_units_and_chunks(sim_config, tmp_path):
    config = replace(sim_config, chunk_size=10)
    summary = simulate(config, tmp_path / "sim", workers=1, progress=False)
    assert summary["stamps"] == {"train": 24, "val": 8, "test": 8}
    assert sorted(p.name for p in (tmp_path / "sim" / "train").iterdir()) == [
        "stamps_00000.fits",
        "stamps_00001.fits",
        "stamps_00002.fits",
    ]
    stamps, labels, header = read_stamp_set(tmp_path / "sim" / "train")
    assert stamps.shape == (24, 64, 64) and stamps.dtype == np.float32
    assert np.all(np.isfinite(stamps))
    assert header["PIXSCALE"] == 0.06 and header["MAGZPT"] == 25.9463
    assert header["BUNIT"] == "ELECTRONS/S" and header["PSFID"].startswith("legato-model-wfc3ir-f160w")
    assert list(labels["id"]) == list(range(24))
    assert labels["re_arcsec"].unit == u.arcsec and labels["pa_deg"].unit == u.deg
    for column in ("mag", "re_arcsec", "n", "q", "ellipticity", "pa_deg", "x_offset_pix", "y_offset_pix", "snr", "flux"):
        assert column in labels.colnames
    # the galaxy's light peaks at the stamp centre, within the sub-pixel offset
    peak = np.unravel_index(np.argmax(stamps.mean(axis=0)), stamps.shape[1:])
    assert abs(peak[0] - 32) <= 1 and abs(peak[1] - 32) <= 1
    assert not (tmp_path / "sim.partial").exists()


def test_offsets_and_position_angles_are_random(sim_config):
    from legato.simulation.simulate import draw_split_parameters

    labels = draw_split_parameters(replace(sim_config, sizes={"train": 500}))["train"]
    assert np.abs(labels["x_offset_pix"]).max() <= 0.5 and np.std(labels["x_offset_pix"]) > 0.2
    assert labels["pa_deg"].min() >= -90 and labels["pa_deg"].max() <= 90 and np.std(labels["pa_deg"]) > 40


def test_separate_processes_write_identical_bytes(tmp_path, repo_root):
    """What `dvc repro` on a fresh clone relies on: the same parameters give the same files, whatever the worker count."""
    import hashlib
    import os
    import subprocess
    import sys

    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["simulate"].update(
        chunk_size=6, catalog=str(repo_root / params["simulate"]["catalog"]), psf=str(repo_root / params["simulate"]["psf"])
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"set_{workers}"
        command = [
            sys.executable,
            "-m",
            "legato",
            "simulate",
            "--params",
            "params.yaml",
            "--train",
            "10",
            "--val",
            "4",
            "--test",
            "4",
            "--workers",
            str(workers),
            "--out",
            str(out),
            "--report",
            str(tmp_path / f"report_{workers}.json"),
            "--no-progress",
        ]
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, env=dict(os.environ, PYTHONHASHSEED=str(workers)))
        digests.append(
            {p.relative_to(out).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}
        )
    assert len(digests[0]) == 7 and digests[0] == digests[1]  # train in two chunks, val, test, and each split's fingerprint
    assert (tmp_path / "report_1.json").read_bytes() == (tmp_path / "report_2.json").read_bytes()
    assert "wall_seconds" not in (tmp_path / "report_1.json").read_text()
