"""Great Expectations suites on real checkpoints: clean sets pass, corrupt ones fail, shifted ones are flagged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from legato.cli import app

STATIC_SUITES = ("stamp_integrity.json", "labels.json", "label_units.json")


@pytest.fixture(scope="module")
def expectations(tiny_sim, repo_root, tmp_path_factory):
    """The repository's static suites plus a shift suite built from the tiny training set (batches of 16)."""
    from legato.validation.validate import build_reference

    folder = tmp_path_factory.mktemp("expectations")
    for name in STATIC_SUITES:
        shutil.copy(repo_root / "expectations" / name, folder / name)
    build_reference(tiny_sim / "train", tiny_sim / "val", folder / "domain_shift.json", batch_size=16, n_boot=30)
    return folder


def _write_variant(tiny_sim, folder, transform=None, label_transform=None):
    from legato.io.stamps import StampSetMeta, read_stamp_set, write_stamp_set

    stamps, labels, header = read_stamp_set(tiny_sim / "test")
    stamps = transform(stamps.copy()) if transform else stamps
    labels = label_transform(labels.copy()) if label_transform else labels
    meta = StampSetMeta(
        pixel_scale=0.06, zeropoint=header["MAGZPT"], band="F160W", psf_id="test", domain="test", extra={"SKYSIG": header["SKYSIG"]}
    )
    write_stamp_set(folder, stamps.astype(np.float32), labels, meta)
    return folder


def test_suites_are_readable_json_with_a_reason_for_every_expectation(repo_root):
    for name in STATIC_SUITES:
        suite = json.loads((repo_root / "expectations" / name).read_text())
        assert suite["name"] == name.removesuffix(".json") and suite["expectations"]
        assert all(item["meta"]["guards"] for item in suite["expectations"])


def test_clean_set_passes_a_real_checkpoint_and_writes_data_docs(tiny_sim, expectations, tmp_path):
    from legato.validation.validate import validate_set

    report = validate_set(tiny_sim / "test", expectations, 64, name="clean", reports_dir=tmp_path)
    assert report["passed"] and report["failures"] == [], report["failures"]
    assert not report["shift_flagged"], [
        (r["statistic"], r["failed"], r["kl"], r["kl_threshold"]) for r in report["shift_table"] if r["failed"]
    ]
    shift_suite = json.loads((expectations / "domain_shift.json").read_text())
    assert report["suites"]["integrity"]["evaluated"] == 13
    assert report["suites"]["shift"]["evaluated"] == len(shift_suite["expectations"]) >= 2 * 9
    assert (tmp_path / "clean_docs" / "index.html").is_file()
    assert json.loads((tmp_path / "clean.json").read_text())["n_stamps"] == 48


def test_nan_pixels_and_wrong_units_fail_with_one_line_each(tiny_sim, expectations, tmp_path, repo_root):
    def add_nan(stamps):
        stamps[3, 10:12, 10:12] = np.nan
        return stamps

    def radius_in_pixels(labels):
        labels["re_arcsec"] = labels["re_arcsec"].value / 0.06
        labels["re_arcsec"].unit = "pix"
        return labels

    bad = _write_variant(tiny_sim, tmp_path / "bad", add_nan, radius_in_pixels)
    result = CliRunner().invoke(
        app,
        [
            "validate",
            str(bad),
            "--expectations",
            str(expectations),
            "--reports",
            str(tmp_path / "r"),
            "--no-track",
            "--no-shift",
            "--params",
            str(repo_root / "params.yaml"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert any("stamp_integrity: finite_fraction" in line and "NaN or inf pixels" in line for line in errors)
    assert any("label_units" in line and "wrong units" in line for line in errors)


def test_a_shifted_set_is_a_warning_with_a_per_statistic_table(tiny_sim, expectations, tmp_path, repo_root):
    rng = np.random.default_rng(1)

    def brighter_and_noisier(stamps):
        return stamps * 10.0 + rng.normal(0.0, 0.015, stamps.shape)  # zeropoint off by 2.5 mag, noise x2

    shifted = _write_variant(tiny_sim, tmp_path / "shifted", brighter_and_noisier)
    result = CliRunner().invoke(
        app,
        [
            "validate",
            str(shifted),
            "--expectations",
            str(expectations),
            "--reports",
            str(tmp_path / "r"),
            "--no-track",
            "--params",
            str(repo_root / "params.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: shifted: domain shift" in result.output and "noise_sigma" in result.output
    table = {row["statistic"]: row for row in json.loads((tmp_path / "r" / "shifted.json").read_text())["shift_table"]}
    assert table["noise_sigma"]["failed"] and table["noise_sigma"]["median_shift_sigma"] > 5
    assert table["mag_aperture"]["failed"]


def test_missing_label_column_and_missing_suite_are_clear_errors(tiny_sim, expectations, tmp_path, repo_root):
    unlabelled = _write_variant(tiny_sim, tmp_path / "nolabel", label_transform=lambda t: t[[c for c in t.colnames if c != "n"]])
    result = CliRunner().invoke(
        app,
        [
            "validate",
            str(unlabelled),
            "--expectations",
            str(expectations),
            "--reports",
            str(tmp_path / "r"),
            "--no-track",
            "--no-shift",
            "--params",
            str(repo_root / "params.yaml"),
        ],
    )
    assert result.exit_code == 1 and "labels: expect_table_columns_to_match_set failed" in result.output
    result = CliRunner().invoke(
        app,
        ["validate", str(unlabelled), "--expectations", str(tmp_path / "none"), "--no-track", "--params", str(repo_root / "params.yaml")],
    )
    assert result.exit_code == 1 and "expectation suite" in result.output and "not found" in result.output
