"""Domain adaptation: nested subsets, equal budgets, the curve with nested MLflow runs, Table 2 and its targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from legato.errors import ConfigError
from legato.evaluation.adaptation import adaptation_targets, write_adaptation_reports
from legato.evaluation.real_check import real_check
from legato.flags import BLENDED
from legato.io.stamps import StampSetMeta, read_stamp_set, write_stamp_set
from legato.training.adapt import (
    AdaptConfig,
    FineTuning,
    adaptation_curve,
    classical_versus_classical,
    effective_sizes,
    epochs_for,
    nested_subsets,
)


def test_subsets_are_nested_and_split_four_to_one():
    subsets = nested_subsets(100, [10, 50, 100], 0.2, seed=1)
    small, large = (set(np.concatenate(subsets[s])) for s in (10, 50))
    assert small <= large and len(large) == 50
    train, val = subsets[50]
    assert (len(train), len(val)) == (40, 10) and not set(train) & set(val)
    with pytest.raises(ConfigError, match="exceed"):
        nested_subsets(20, [50], 0.2, seed=1)
    assert effective_sizes([50, 100, 4000, 3000], 2900) == [50, 100, 2900]


def test_both_methods_get_the_same_step_budget():
    config = AdaptConfig(epochs=30, max_steps=200, batch_size=32)
    assert epochs_for(40, config) == 30  # 2 steps per epoch
    assert epochs_for(3200, config) == 2  # 100 steps per epoch
    assert epochs_for(100000, config) == 1


def test_targets_are_checked_not_assumed():
    curve = {
        "sizes": [50, 400, 4000],
        "finetuned": {p: [0.95, 0.97, 0.98] for p in ("mag", "re", "n", "ellipticity")},
        "scratch": {p: [0.1, 0.5, 0.99] for p in ("mag", "re", "n", "ellipticity")},
    }
    targets = adaptation_targets(
        curve, {"mag": 0.98, "re": 0.9, "n": 0.8, "ellipticity": 0.9}, {"mag": 0.97, "re": 0.95, "n": 0.8, "ellipticity": 0.9}
    )
    assert targets["finetuned_above_scratch_at_every_size"]["mag"] is False  # scratch wins at 4000
    assert targets["small_within_0.02_of_largest"]["mag"] == {"largest_gap": 0.03, "met": False}
    assert targets["after_at_least_classical_vs_classical"]["re"]["met"] is False
    assert targets["after_at_least_classical_vs_classical"]["n"]["met"] is True


@pytest.fixture(scope="module")
def labelled_sets(tiny_sim, tmp_path_factory):
    """Stand-ins for test A and pool B: the tiny simulated sets relabelled with a shifted magnitude, plus an alternative fit."""
    folder = tmp_path_factory.mktemp("realistic")
    rng = np.random.default_rng(0)
    for split, source in (("A", "test"), ("B", "train")):
        stamps, labels, header = read_stamp_set(tiny_sim / source)
        labels["mag"] = labels["mag"] + 0.3  # a domain shift the simulation network has not seen
        for name in ("mag", "re_arcsec", "n", "q", "ellipticity"):
            labels[f"alt_{name}"] = np.asarray(labels[name]) * (1 + 0.002 * rng.normal(size=len(labels)))
        labels["alt_flags"] = np.zeros(len(labels), dtype=np.int64)
        meta = StampSetMeta(pixel_scale=header["PIXSCALE"], zeropoint=header["MAGZPT"], band="F160W", psf_id="test", domain="realistic")
        write_stamp_set(folder / split, stamps, labels, meta)
    return folder


def test_setups_are_read_from_params_and_bad_ones_refused():
    config = AdaptConfig.from_params(
        {"base": "x", "seeds": [1, 2], "setups": {"head": {"frozen_prefixes": ["block1", "unit"], "learning_rate": 0.001}}}
    )
    assert config.seeds == (1, 2) and config.setups["head"] == FineTuning(("block1", "unit"), 0.001)
    assert config.setups["head"].describe() == "frozen=block1,unit lr=0.001"
    with pytest.raises(ConfigError, match="bad adapt parameters"):
        AdaptConfig.from_params({"setups": {"head": {"frozen_prefixes": []}}})
    with pytest.raises(ConfigError, match="at least one"):
        AdaptConfig(seeds=())


def test_production_estimator_is_adapted_over_seeds_with_a_measured_setup(production, labelled_sets, tmp_path):
    import mlflow

    base, _ = production
    setups = {"frozen_block1": FineTuning(("block1",), 3e-4), "head_only": FineTuning(("block1", "unit"), 1e-3)}
    config = AdaptConfig(sizes=(24, 48, 500), epochs=2, max_steps=3, batch_size=16, setups=setups, selection_size=24, seeds=(7, 8))
    result = adaptation_curve(config, base, labelled_sets / "A", labelled_sets / "B", tmp_path / "adapted")
    curve = result["figure5"]
    assert curve["sizes"] == [24, 48, 96] and curve["requested_sizes"] == [24, 48, 500] and curve["seeds"] == [7, 8]
    for method in ("finetuned", "scratch"):
        for p in ("mag", "re", "n", "ellipticity"):
            per_seed = [curve["per_seed"][s][method][p] for s in ("7", "8")]
            assert curve[method][p] == pytest.approx(np.mean(per_seed, axis=0), abs=1e-4)
            assert curve[f"{method}_std"][p] == pytest.approx(np.std(per_seed, axis=0), abs=1e-4)
    assert result["selection"]["chosen"] in setups and set(result["selection"]["setups"]) == set(setups)
    assert result["after"]["mag"] == curve["finetuned"]["mag"][-1] and result["after_std"]["mag"] == curve["finetuned_std"]["mag"][-1]
    manifest = json.loads((tmp_path / "adapted/estimator.json").read_text())
    assert manifest["kind"] == "production" and manifest["adapted_on"] == 96 and manifest["uncertainty"]["calibrated_on"] == 19
    assert manifest["finetuning_setup"]["name"] == result["selection"]["chosen"] and "input_range" in manifest
    summary = json.loads((tmp_path / "adapted/run.json").read_text())
    client = mlflow.MlflowClient()
    children = client.search_runs(
        [client.get_run(summary["parent_run_id"]).info.experiment_id], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'"
    )
    expected = {f"{m}-n{s:04d}-s{seed}" for m in ("finetuned", "scratch") for s in (24, 48, 96) for seed in (7, 8)} | {
        f"select-{n}-n0024" for n in setups
    }
    assert sorted(r.info.run_name for r in children) == sorted(expected)
    adapted_run = client.get_run(summary["run_id"])
    assert adapted_run.data.tags["training_domain"] == "realistic-adapted" and "A_r2_mag" in adapted_run.data.metrics
    base_summary = json.loads((base / "run.json").read_text())
    assert adapted_run.data.tags["adapted_from_model_uri"] == base_summary["model_uri"] and "data_version" in adapted_run.data.tags
    # both sides of the realistic-domain gate: the base's and the adapted network's R² on A
    assert adapted_run.data.metrics["test_r2_mag_realistic_a"] == pytest.approx(curve["per_seed"]["7"]["finetuned"]["mag"][-1], abs=1e-4)
    assert client.get_run(base_summary["run_id"]).data.metrics["test_r2_mag_realistic_a"] == pytest.approx(
        result["before"]["mag"], abs=1e-4
    )
    from legato.registry.promotion import offer_domain_alias
    from legato.registry.versions import register_estimator

    client.set_tag(base_summary["run_id"], "validation", "passed")  # as legato evaluate marks the production run
    assert adapted_run.data.tags["validation"] == "passed"
    versions = {
        label: register_estimator(client, "adapt-test", folder)[0]
        for label, folder in (("production", base), ("adapted", tmp_path / "adapted"))
    }
    assert versions["adapted"].tags["parent_version"] == str(versions["production"].version)
    domain = {"alias": "realistic", "subset": "realistic_a", "incumbent": "production", "candidates": ["adapted"]}
    offered = offer_domain_alias(client, "adapt-test", versions, domain)
    better = all(curve["per_seed"]["7"]["finetuned"][p][-1] >= result["before"][p] for p in ("mag", "re", "n", "ellipticity"))
    assert offered["promoted"] is better and str(offered["holder"]) == str(versions["adapted" if better else "production"].version)
    loaded = mlflow.pyfunc.load_model(summary["model_uri"])
    stamps, test_labels, _ = read_stamp_set(labelled_sets / "A")
    assert {"mag", "re_arcsec", "mag_err", "mag_err95", "flags"} <= set(loaded.predict(stamps[:3]).columns)

    result["classical_vs_classical"] = classical_versus_classical(test_labels)
    assert result["classical_vs_classical"]["n"] == 48 and result["classical_vs_classical"]["r2"]["mag"] > 0.99
    result["real_check"] = real_check({"simulation": base, "adapted": tmp_path / "adapted"}, labelled_sets / "A")
    assert len(result["real_check"]["galaxies"]) == 48 and "error" in result["real_check"]["galaxies"][0]["adapted"]
    written = write_adaptation_reports(result, tmp_path / "reports")
    table2 = json.loads((tmp_path / "reports/table2.json").read_text())
    assert set(table2) >= {"before", "after", "after_std_over_seeds", "classical_vs_classical", "targets"}
    assert set(table2["after"]) == {"mag", "re", "n", "ellipticity"} and table2["seeds"] == [7, 8]
    assert (tmp_path / "reports/figures/figure5.png").stat().st_size > 10_000 and len(written) == 5
    assert (tmp_path / "reports/plots/figure5.csv").read_text().count("\n") == 4


def with_neighbours(folder, out):
    """A copy of the labelled set ``folder`` whose every second stamp holds a bright round neighbour 16 pixels off."""
    stamps, labels, header = read_stamp_set(folder)
    size = stamps.shape[-1]
    y, x = np.mgrid[:size, :size]
    blob = 40.0 * float(np.median(np.abs(stamps))) * np.exp(-((x - size // 2 - 16) ** 2 + (y - size // 2) ** 2) / (2 * 2.0**2))
    stamps = np.array(stamps, dtype=np.float32)
    stamps[::2] += blob.astype(np.float32)
    meta = StampSetMeta(pixel_scale=header["PIXSCALE"], zeropoint=header["MAGZPT"], band="F160W", psf_id="test", domain="realistic")
    write_stamp_set(out, stamps, labels, meta)
    return out


def test_deblended_adaptation_learns_and_serves_the_stamps_without_their_neighbours(production, labelled_sets, tmp_path):
    import mlflow

    from legato.models.deblending import deblended_stamps
    from legato.models.estimator import LoadedEstimator

    base, _ = production
    sets = {split: with_neighbours(labelled_sets / split, tmp_path / split) for split in ("A", "B")}
    setups = {"all_layers": FineTuning((), 3e-4)}
    config = AdaptConfig(sizes=(500,), epochs=1, max_steps=2, batch_size=16, setups=setups, selection_size=24, deblend_grow_pix=0)
    result = adaptation_curve(config, base, sets["A"], sets["B"], tmp_path / "adapted")
    assert result["training_domain"] == "realistic-adapted+deblended" and result["figure5"]["sizes"] == [96]
    manifest = json.loads((tmp_path / "adapted/estimator.json").read_text())
    assert manifest["kind"] == "deblended" and manifest["deblend"]["grow_pix"] == 0
    assert manifest["training"]["recipe"]["base_domain"] == "realistic-adapted" and "input_range" in manifest
    network = json.loads((tmp_path / "adapted/base/estimator.json").read_text())
    assert network["kind"] == "production" and network["adapted_on"] == 96 and network["uncertainty"]["calibrated_on"] == 19
    assert "blended" in network["uncertainty"]  # its intervals calibrated apart for the stamps flagged as given
    # every inference path removes the neighbours before the adapted network measures
    stamps, _, _ = read_stamp_set(sets["A"])
    cleaned = deblended_stamps(stamps, 0)
    assert not np.array_equal(cleaned[::2], stamps[::2])
    rows = LoadedEstimator(tmp_path / "adapted").predict(stamps)
    direct = LoadedEstimator(tmp_path / "adapted/base").predict(cleaned)
    np.testing.assert_allclose(rows["mag"], direct["mag"], rtol=1e-6)
    assert ((rows["flags"][::2] & BLENDED) > 0).mean() > 0.5  # measured on the stamps as given
    summary = json.loads((tmp_path / "adapted/run.json").read_text())
    assert mlflow.MlflowClient().get_run(summary["run_id"]).data.tags["training_domain"] == "realistic-adapted+deblended"
    assert {"mag", "mag_err", "flags"} <= set(mlflow.pyfunc.load_model(summary["model_uri"]).predict(stamps[:3]).columns)
    with pytest.raises(ConfigError, match="deblend_grow_pix"):
        AdaptConfig(deblend_grow_pix=-1)
