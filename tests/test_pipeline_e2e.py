"""End to end: a copy of the repository fetches its data offline and runs the real `dvc repro` at toy scale."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from legato.io.fingerprint import STAND_IN_VARIABLE

pytestmark = pytest.mark.slow


def bright_training_galaxies(repo: Path) -> int:
    """Galaxies of the copy's noiseless training split brighter than params refine.bright_mag (12 noisy copies, not 2)."""
    from legato.io.stamps import load_split

    cut = yaml.safe_load((repo / "params.yaml").read_text())["refine"]["bright_mag"]
    _, labels, _ = load_split(repo / "datasets/noiseless/train")
    return int(sum(float(mag) < cut for mag in labels["mag"]))


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=780)  # the toy pipeline: ~8 min
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture()
def repo_copy(tmp_path, repo_root):
    """The project's files as a fresh clone would have them (git-tracked or not ignored), without data/."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dest = tmp_path / "legato"
    for name in listed:
        source = repo_root / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{dest / 'mlflow.db'}"  # the copy's own store, as on a fresh clone
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], dest, env)
    return dest, env


def test_fresh_copy_pulls_data_and_reproduces_pipeline(repo_copy):
    repo, env = repo_copy
    dvc = [sys.executable, "-m", "dvc"]
    assert not (repo / "data").exists()
    run([*dvc, "pull", "-q", "data.dvc"], repo, env)
    run([*dvc, "pull", "-q", "train_production"], repo, env)  # the published production estimator, not retrained
    run([*dvc, "pull", "-q", "train_scenes"], repo, env)  # and the scene-trained, PSF-conditioned one
    assert json.loads((repo / "models/scenes/estimator.json").read_text())["psf_input"]["default_band"] == "F160W"
    assert json.loads((repo / "models/production/estimator.json").read_text())["kind"] == "production"
    assert (repo / "data/vanderwel2014_3dhst/cosmos_3dhst.v4.1_f160w.galfit").is_file()
    assert (repo / "data/candels_uds_galfit_blocks/H.gf1.fits").is_file()

    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in yaml.safe_load((repo / "tests/toy_pipeline.yaml").read_text()).items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run([*dvc, "repro"], repo, env)
    files = sorted(p.name for p in (repo / "datasets/simulated/train").iterdir())
    assert files == ["fingerprint.json", "stamps_00000.fits", "stamps_00001.fits"]
    assert set(json.loads((repo / "reports/simulate.json").read_text())["fingerprints"]) == {"train", "val", "test"}
    assert (repo / "reports/simulate.json").is_file()
    assert (repo / "models/arch1/estimator.json").is_file() and (repo / "models/arch2/estimator.json").is_file()
    table1 = json.loads((repo / "reports/table1.json").read_text())
    assert set(table1["arch1"]) == {"mag", "re", "n", "ellipticity"} and "full_h245" in table1
    assert (repo / "reports/figures/figure3.png").is_file()
    # the classical fitter is the third column, covering the stamps it fitted
    assert set(table1["classical"]) == {"mag", "re", "n", "ellipticity"}
    assert table1["n_scored"]["full_h245"]["classical"] <= 12 < table1["n_scored"]["full_h245"]["arch1"] == 16
    classical = json.loads((repo / "reports/fit_classical.json").read_text())
    assert classical["fitted"] == 12 and classical["run_name"] == "classical-imfit"
    # the test set passed the Great Expectations checkpoints before it was scored
    validation = json.loads((repo / "reports/validation/simulated_test.json").read_text())
    assert validation["passed"] and validation["suites"]["integrity"]["evaluated"] == 13
    assert (repo / "datasets/validation/simulated_test_docs/index.html").is_file()
    assert json.loads((repo / "expectations/domain_shift.json").read_text())["meta"]["batch_size"] == 8
    # registration ends the pipeline with a champion that the server can load
    registry = json.loads((repo / "reports/registry.json").read_text())
    assert registry["model"] == "legato-sersic"
    assert set(registry["versions"]) == {
        "arch1",
        "arch2",
        "adapted",
        "production",
        "scenes",
        "routed",
        "refined",
        "refined_scenes",
        "adapted_scenes",
        "adapted_deblended",
        "deblended",
        "deblended_scenes",
    }
    # the published production estimator is tracked in this store, scored in Table 1 and against its targets
    assert "production" in table1 and set(table1["production"]) == {"mag", "re", "n", "ellipticity"}
    production = json.loads((repo / "reports/production.json").read_text())
    assert production["n_test"] == 16 and set(production["depths"]["white"]) == {"0.25", "0.5", "1.0", "2.0"}
    assert production["real"]["n"] == 15 and "table1_h23_vs_classical" in production["targets"]
    # a published estimator passes the gates against the toy networks and serves as champion
    assert (
        registry["offered"] in ("production", "scenes", "routed", "refined", "refined_scenes", "deblended", "deblended_scenes")
        and registry["holder"] == registry["versions"][registry["offered"]]
    )
    realistic_truth = json.loads((repo / "reports/realistic_truth.json").read_text())
    assert "scenes" in table1 and {"scenes", "routed", "refined", "refined_scenes", "adapted_scenes", "deblended"} <= set(
        realistic_truth["against_truth"]
    )
    # real data ingested, the realistic domain labelled by classical fits, and the adaptation curve
    assert json.loads((repo / "reports/ingest_uds.json").read_text())["ingested"] == 15
    labelling = json.loads((repo / "reports/assemble_realistic.json").read_text())
    assert labelling["A"]["fitted"] == 8 and labelling["B"]["fitted"] == 12
    assert json.loads((repo / "reports/label_realistic.json").read_text())["A"]["fits"]["alternative"]["fitted"] == 8
    table2 = json.loads((repo / "reports/table2.json").read_text())
    assert set(table2["before"]) == set(table2["after"]) == set(table2["classical_vs_classical"]) == {"mag", "re", "n", "ellipticity"}
    figure5 = json.loads((repo / "reports/figure5.json").read_text())
    assert figure5["sizes"][0] == 6 and figure5["sizes"][-1] <= 12 and len(figure5["scratch"]["mag"]) == 2
    real_check = json.loads((repo / "reports/real_check.json").read_text())
    assert real_check["n"] == 15 and {"routed", "refined", "refined_scenes", "adapted_scenes", "deblended"} <= set(real_check["estimators"])
    # the adaptation curve redone on the scene-trained base (legato adapt --section adapt_scenes)
    assert set(json.loads((repo / "reports/adapt_scenes/table2.json").read_text())["after"]) == {"mag", "re", "n", "ellipticity"}
    # and on the production base shown the stamps without their neighbours (--section adapt_deblended): a deblended estimator
    assert set(json.loads((repo / "reports/adapt_deblended/table2.json").read_text())["after"]) == {"mag", "re", "n", "ellipticity"}
    assert json.loads((repo / "models/adapted_deblended/estimator.json").read_text())["kind"] == "deblended"
    assert "adapted_deblended" in real_check["estimators"] and "adapted_deblended" in realistic_truth["against_truth"]
    # the two adapted estimators routed by the blend flag (legato route --section route_adapted), scored on test A
    routed_adapted = json.loads((repo / "models/adapted_routed/estimator.json").read_text())
    assert routed_adapted["kind"] == "routed" and routed_adapted["disagreement_sigma"] is None
    assert "adapted_routed" in realistic_truth["against_labels"] and "adapted_routed" in real_check["estimators"]
    # the routed estimator (legato route) is built, tracked and scored in Table 1 beside the networks it routes between
    assert json.loads((repo / "models/routed_tracked/estimator.json").read_text())["kind"] == "routed"
    assert set(table1["routed"]) == {"mag", "re", "n", "ellipticity"}
    # the production estimator with its photometric second stage (legato refine), tracked and scored the same way
    assert json.loads((repo / "models/refined_tracked/estimator.json").read_text())["kind"] == "refined"
    assert set(table1["refined"]) == {"mag", "re", "n", "ellipticity"} and json.loads((repo / "reports/refine.json").read_text())[
        "train_rows"
    ] == 60 + 10 * bright_training_galaxies(repo)
    # and the scene estimator with the stage trained per band (legato refine --section refine_scenes: 30 galaxies, 2 copies)
    refined_scenes = json.loads((repo / "models/refined_scenes_tracked/estimator.json").read_text())
    assert refined_scenes["kind"] == "refined" and refined_scenes["psf_input"]["default_band"] == "F160W"
    assert set(table1["refined_scenes"]) == {"mag", "re", "n", "ellipticity"}
    assert json.loads((repo / "reports/refine_scenes.json").read_text())["train_rows"] == 60
    # the refined estimator shown the stamps without their neighbours (legato deblend), tracked and scored the same way
    deblended = json.loads((repo / "models/deblended_tracked/estimator.json").read_text())
    assert deblended["kind"] == "deblended" and deblended["deblend"]["grow_pix"] == 0 and "deblended" in table1
    assert 0 < json.loads((repo / "reports/deblend.json").read_text())["calibration_stamps"] <= labelling["B"]["fitted"]
    deblended_scenes = json.loads((repo / "models/deblended_scenes_tracked/estimator.json").read_text())
    assert deblended_scenes["kind"] == "deblended" and deblended_scenes["psf_input"]["default_band"] == "F160W"
    assert {"deblended", "deblended_scenes"} <= set(real_check["estimators"]) and "deblended_scenes" in table1
    assert registry["holder"] in registry["versions"].values()
    assert registry["domain_alias"]["alias"] == "realistic" and registry["domain_alias"]["holder"] in (
        registry["versions"]["production"],
        registry["versions"]["adapted"],
        registry["versions"]["adapted_scenes"],
        registry["versions"]["adapted_deblended"],
    )
    status = run([*dvc, "status"], repo, env)
    assert "up to date" in status
    assert (repo / "mlflow_history/manifest.json").is_file()

    published_copy_regenerates_only_stamp_sets(repo, env, dvc)

    # a parameter change invalidates exactly the stage that reads it
    params["simulate"]["seed"] += 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([*dvc, "status"], repo, env)
    assert "simulate" in status and "changed deps" in status
    assert "Running stage 'simulate'" in run([*dvc, "repro", "simulate"], repo, env)
    # new simulated data make the trainings downstream stale
    status = run([*dvc, "status"], repo, env)
    assert "train_arch1" in status and "train_arch2" in status and "simulate:" not in status


REGENERATED_STAGES = {"simulate", "simulate_noiseless", "simulate_bands", "simulate_realistic", "assemble_realistic"}


def published_copy_regenerates_only_stamp_sets(repo: Path, env: dict, dvc: list) -> None:
    """Push the pipeline's outputs to a fresh remote; a clone that pulls them reruns only the push: false stages."""
    remote = repo.parent / "fresh-remote"
    run([*dvc, "remote", "add", "-f", "-d", "fresh", str(remote)], repo, env)
    run([*dvc, "push", "-q"], repo, env)
    pushed = {p.parent.name + p.name for p in remote.rglob("*") if p.is_file()}  # files/md5/ab/cdef... -> abcdef...
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in REGENERATED_STAGES:
        for out in lock[stage]["outs"]:
            if out["path"].startswith("datasets/"):
                assert out["md5"] not in pushed, f"{stage} output {out['path']} was pushed"
    run(["git", "add", "-A"], repo, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "toy pipeline, published"], repo, env)

    clone = repo.parent / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], repo.parent, env)
    env = dict(env, MLFLOW_TRACKING_URI=f"sqlite:///{clone / 'mlflow.db'}")  # the clone's own, empty store
    run([*dvc, "pull", "-q", "--allow-missing"], clone, env)
    imported = run([sys.executable, "-m", "legato", "history", "import", "mlflow_history"], clone, env)
    assert "0 present" in imported and "registry versions created: 12" in imported
    # the clone stands in for a machine of another CPU family: every regenerated pixel a few ULPs away
    other_cpu = dict(env, **{STAND_IN_VARIABLE: "2"})
    output = run([*dvc, "repro"], clone, other_cpu)
    ran = set(re.findall(r"Running stage '([\w-]+)'", output))
    assert ran == REGENERATED_STAGES, output
    chunk = "datasets/simulated/test/stamps_00000.fits"
    assert (clone / chunk).read_bytes() != (repo / chunk).read_bytes()  # other bytes ...
    assert "fingerprint kept" in output and "fingerprint new" not in output  # ... the same sets
    assert "up to date" in run([*dvc, "status"], clone, env)
    assert run(["git", "status", "--porcelain"], clone, env).strip() == ""  # dvc.lock and the reports unchanged
    where = run([sys.executable, "-m", "legato", "where"], clone, env)
    assert re.search(r"regenerated: datasets/simulated: test, train, val regenerated in \d+ s; fingerprints kept", where), where
    models = run([sys.executable, "-m", "legato", "models"], clone, env)
    assert "champion" in models and "production" in models

    # a set that differs beyond rounding (same recipe, same code) is an error naming the set and the statistic
    different = dict(env, **{STAND_IN_VARIABLE: "300000"})
    failed = subprocess.run([*dvc, "repro", "--force", "simulate"], cwd=clone, env=different, capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0
    assert re.search(
        r"regenerated set datasets/simulated/\w+ differs from its recorded fingerprint beyond rounding: statistic pixels\.",
        failed.stdout + failed.stderr,
    )
    assert run(["git", "status", "--porcelain"], clone, env).strip() == ""  # the recorded fingerprints are untouched
    run([*dvc, "repro", "simulate"], clone, env)  # the set is regenerated again; nothing downstream runs
    assert "up to date" in run([*dvc, "status"], clone, env)
