"""Fingerprints of regenerated stamp sets: rounding-level differences are the same set, real ones are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table

from legato.errors import DataError
from legato.io.fingerprint import (
    FINGERPRINT_NAME,
    RTOL,
    STAND_IN_VARIABLE,
    FingerprintMismatch,
    code_digest,
    cpu_stand_in,
    recipe,
    settle,
    split_statistics,
)
from legato.io.stamps import StampSetMeta, write_stamp_set

META = StampSetMeta(pixel_scale=0.06, zeropoint=25.9463, band="F160W", psf_id="test", domain="test")


def write_set(folder: Path, stamps: np.ndarray, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = Table({"id": np.arange(len(stamps)), "mag": rng.uniform(18, 24, len(stamps)), "kind": ["sersic"] * len(stamps)})
    write_stamp_set(folder, stamps, labels, META, chunk_size=3)
    return folder


@pytest.fixture()
def stamps():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:16, :16]
    galaxy = np.exp(-((xx - 8.2) ** 2 + (yy - 7.6) ** 2) / 6.0)
    return (galaxy[None] * rng.uniform(0.5, 2.0, (8, 1, 1)) + rng.normal(0, 0.01, (8, 16, 16))).astype(np.float32)


@pytest.fixture()
def inputs(tmp_path):
    path = tmp_path / "catalogue.txt"
    path.write_text("some input\n")
    return (path,)


def test_statistics_describe_pixels_and_labels(tmp_path, stamps):
    stats = split_statistics(write_set(tmp_path / "set", stamps))
    assert stats["stamps"]["value"] == 8
    assert stats["pixels.sum"]["value"] == pytest.approx(float(stamps.astype(float).sum()), rel=1e-10)
    assert stats["pixels.centroid_x"]["value"] == pytest.approx(8.2, abs=0.2)
    assert stats["pixels.centroid_y"]["value"] == pytest.approx(7.6, abs=0.2)
    assert {"labels.mag.mean", "labels.mag.rms", "labels.id.mean"} <= set(stats)
    assert not any(key.startswith("labels.kind") for key in stats)  # text columns have no moments
    assert all(stat["scale"] >= 0 for stat in stats.values())


def test_regenerated_set_keeps_its_recorded_fingerprint_within_rounding(tmp_path, stamps, inputs, monkeypatch):
    split_recipe = recipe("toy", "test", {"seed": 1}, inputs)
    first, outcome = settle(write_set(tmp_path / "a", stamps), split_recipe, "code-1", None)
    assert outcome["outcome"] == "new"
    written = (tmp_path / "a" / FINGERPRINT_NAME).read_bytes()

    # another CPU's last bits: every pixel a few float32 ULPs away
    monkeypatch.setenv(STAND_IN_VARIABLE, "3")
    moved = cpu_stand_in(stamps)
    assert not np.array_equal(moved, stamps) and np.allclose(moved, stamps, rtol=1e-6, atol=0)
    record, outcome = settle(write_set(tmp_path / "b", moved), split_recipe, "code-1", first)
    assert outcome["outcome"] == "kept" and 0 < outcome["largest_deviation"] <= 1
    assert record == first
    assert (tmp_path / "b" / FINGERPRINT_NAME).read_bytes() == written  # byte for byte: downstream stays up to date


def test_real_difference_with_same_recipe_and_code_names_the_statistic(tmp_path, stamps, inputs):
    split_recipe = recipe("toy", "test", {"seed": 1}, inputs)
    first, _ = settle(write_set(tmp_path / "a", stamps), split_recipe, "code-1", None)
    changed = stamps.copy()
    changed[0] *= 1.01
    with pytest.raises(FingerprintMismatch, match=r"set .*b differs .* statistic pixels\.sum"):
        settle(write_set(tmp_path / "b", changed), split_recipe, "code-1", first)
    assert not (tmp_path / "b" / FINGERPRINT_NAME).exists()  # nothing downstream can take it for the recorded set


def test_semantic_changes_write_a_new_fingerprint(tmp_path, stamps, inputs):
    split_recipe = recipe("toy", "test", {"seed": 1}, inputs)
    first, _ = settle(write_set(tmp_path / "a", stamps), split_recipe, "code-1", None)
    written = (tmp_path / "a" / FINGERPRINT_NAME).read_text()
    # new code that changes the stamps: a new fingerprint, so the dependants rerun
    changed = stamps * np.float32(1.01)
    record, outcome = settle(write_set(tmp_path / "b", changed), split_recipe, "code-2", first)
    assert outcome["outcome"] == "changed" and (tmp_path / "b" / FINGERPRINT_NAME).read_text() != written
    # new code that leaves the stamps alone: the recorded fingerprint stands, the code digest is updated
    record, outcome = settle(write_set(tmp_path / "c", stamps), split_recipe, "code-3", first)
    assert outcome["outcome"] == "kept" and record["code"] == "code-3"
    assert (tmp_path / "c" / FINGERPRINT_NAME).read_text() == written
    # another parameter (or seed, input, library version): a new recipe
    other = recipe("toy", "test", {"seed": 2}, inputs)
    record, outcome = settle(write_set(tmp_path / "d", stamps), other, "code-1", first)
    assert outcome["outcome"] == "new" and record["recipe"]["config"] == {"seed": 2}
    inputs[0].write_text("another input\n")
    assert recipe("toy", "test", {"seed": 1}, inputs)["inputs"] != split_recipe["inputs"]


def test_recipe_names_a_missing_input(tmp_path):
    with pytest.raises(DataError, match=r"input\(s\) .*absent.fits missing"):
        recipe("toy", "A", {}, (tmp_path / "absent.fits",))


def test_code_digest_follows_the_sources():
    digest = code_digest(("simulation", "io/stamps.py"))
    assert digest == code_digest(("io/stamps.py", "simulation")) and digest != code_digest(("simulation",))


def test_tolerance_is_far_above_rounding_and_far_below_the_data():
    # float64 sums over a set round at ~1e-16 relative; a one-stamp change in 50,000 moves them by ~2e-5
    assert 1e-12 < RTOL < 2e-5


def test_dvc_lists_each_regenerated_sets_code_and_depends_on_fingerprints(repo_root):
    """The sources a fingerprint's code digest covers are deps of its stage; no stage depends on regenerated stamps."""
    from legato.classical.labels import LABELLED_CODE
    from legato.simulation import realistic, simulate

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    code = {
        "simulate": simulate.CODE,
        "simulate_noiseless": simulate.CODE,
        "simulate_realistic": realistic.CODE,
        "assemble_realistic": LABELLED_CODE,
    }
    regenerated = ("datasets/simulated", "datasets/noiseless", "datasets/realistic/raw", "datasets/realistic/labelled")
    for name, sources in code.items():
        deps = set(stages[name]["deps"])
        for source in sources:
            assert f"src/legato/{source}" in deps, f"stage {name} does not list src/legato/{source}"
        outs = [next(iter(out)) if isinstance(out, dict) else out for out in stages[name]["outs"]]
        assert outs and all(out.endswith("/" + FINGERPRINT_NAME) for out in outs), name
        assert any(
            metric.get(f"reports/{'simulate' if name == 'simulate' else name}.json", {}).get("persist")
            for metric in stages[name]["metrics"]
        )
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            if dep.startswith(regenerated):
                assert dep.endswith("/" + FINGERPRINT_NAME), f"stage {name} depends on the regenerated bytes of {dep}"


def test_report_records_fingerprints_per_split(tmp_path, stamps, inputs):
    """What the CLI keeps in a stage report is what `settle` compares against next time."""
    from legato.io.fingerprint import recorded_fingerprints, settle_set

    write_set(tmp_path / "set" / "train", stamps)
    write_set(tmp_path / "set" / "test", stamps[:4])
    recipes = {split: recipe("toy", split, {}, inputs) for split in ("train", "test")}
    records, outcomes = settle_set(tmp_path / "set", recipes, "code", None)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"fingerprints": records}))
    assert recorded_fingerprints(report) == records
    again, outcomes = settle_set(tmp_path / "set", recipes, "code", report)
    assert again == records and {o["outcome"] for o in outcomes.values()} == {"kept"}
