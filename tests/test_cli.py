"""The command line: quick help, one-line errors and non-zero exits on bad configuration."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml


def legato(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "legato", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_is_quick_and_does_not_import_tensorflow():
    start = time.perf_counter()
    result = legato("--help")
    assert result.returncode == 0 and "simulate" in result.stdout
    assert time.perf_counter() - start < 10
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, legato.cli; print('tensorflow' in sys.modules, 'galsim' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.split() == ["False", "False"]


def write_params(tmp_path, params, **changes):
    section = dict(params["simulate"], **changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"simulate": section}))
    return path


@pytest.mark.parametrize(
    ("args", "changes", "message"),
    [
        (["--train", "-3"], {}, "--train must be >= 0, got -3"),
        ([], {"band": "F999W"}, "unknown band 'F999W'"),
        ([], {"catalog": "nowhere/catalog.galfit"}, "catalogue not found: nowhere/catalog.galfit"),
        ([], {"psf": "nowhere/psf.fits"}, "PSF image not found"),
        ([], {"sizes": {"train": -1, "val": 1, "test": 1}}, "simulate.sizes.train must be a non-negative integer"),
        ([], {"stamp_size": 4}, "stamp_size must be at least 8 pixels"),
        ([], {"mag_min": 25.0}, "mag_min (25.0) must be below mag_max"),
        ([], {"noise": {"sky_sigma": -1.0, "exposure_time": 10.0}}, "sky_sigma must be a positive number"),
    ],
)
def test_bad_configuration_is_one_line_and_non_zero(tmp_path, params, repo_root, args, changes, message):
    path = write_params(tmp_path, params, **changes)
    result = legato("simulate", "--params", str(path), "--out", str(tmp_path / "out"), *args, cwd=repo_root)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_parameter_file(tmp_path):
    result = legato("simulate", "--params", str(tmp_path / "none.yaml"))
    assert result.returncode == 1 and result.stderr.strip() == f"error: parameter file not found: {tmp_path / 'none.yaml'}"


def test_simulate_command_writes_sets_and_report(tmp_path, params, raw_data, repo_root):
    path = write_params(tmp_path, params, catalog=str(raw_data["catalog"]), psf=str(raw_data["psf"]))
    report = tmp_path / "report.json"
    result = legato(
        "simulate",
        "--params",
        str(path),
        "--out",
        str(tmp_path / "sim"),
        "--train",
        "6",
        "--val",
        "2",
        "--test",
        "2",
        "--mag-max",
        "23",
        "--report",
        str(report),
        "--no-progress",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr
    from legato.io.stamps import read_stamp_set

    _, labels, _ = read_stamp_set(tmp_path / "sim" / "train")
    assert len(labels) == 6 and labels["mag"].max() <= 23.0
    assert '"total_stamps": 10' in report.read_text()
