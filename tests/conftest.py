"""Shared fixtures: the repository's versioned inputs and small seeded configurations."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from legato.training.noise_aware import ProductionConfig

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "data/vanderwel2014_3dhst/cosmos_3dhst.v4.1_f160w.galfit"
PSF = REPO / "data/psf/wfc3ir_f160w_psf.fits"


@pytest.fixture(scope="session", autouse=True)
def _isolated_tools(tmp_path_factory):
    """No analytics, and MLflow pointed at a per-session SQLite store, never the project's.

    Session-scoped, so module- and session-scoped fixtures that train models see it too.
    """
    store = tmp_path_factory.getbasetemp() / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_NO_ANALYTICS", "1")
        patch.setenv("GX_ANALYTICS_ENABLED", "false")
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


def _restoring_mlflow_uris():
    """Give MLflow's process-wide tracking and registry URIs back after the code under it pointed them elsewhere."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


#: for modules whose tests (``restore_mlflow_uris``) or module fixtures (``restore_mlflow_uris_for_module``) point
#: MLflow at stores of their own: ``pytestmark = pytest.mark.usefixtures(...)``, so that no later module's MLflow
#: call goes to a store (or a stopped server) they left behind
restore_mlflow_uris = pytest.fixture(_restoring_mlflow_uris, name="restore_mlflow_uris")
restore_mlflow_uris_for_module = pytest.fixture(_restoring_mlflow_uris, scope="module", name="restore_mlflow_uris_for_module")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def raw_data() -> dict[str, Path]:
    """The DVC-tracked raw inputs (``make data`` / ``dvc pull data.dvc`` fetches them)."""
    missing = [str(p.relative_to(REPO)) for p in (CATALOG, PSF) if not p.is_file()]
    if missing:
        pytest.fail(f"raw data missing ({', '.join(missing)}): run `dvc pull data.dvc` (or `make data`) first")
    return {"catalog": CATALOG, "psf": PSF}


@pytest.fixture(scope="session")
def params(repo_root):
    from legato.config import load_params

    return load_params(repo_root / "params.yaml")


@pytest.fixture(scope="session")
def sim_config(params, raw_data):
    """The default simulation configuration with absolute data paths and tiny splits."""
    from legato.simulation.settings import simulation_config

    config = simulation_config(params)
    return replace(config, catalog=str(raw_data["catalog"]), psf=str(raw_data["psf"]), sizes={"train": 24, "val": 8, "test": 8})


@pytest.fixture(scope="session")
def galsim_psf(raw_data):
    from legato.simulation.psf import read_psf_image

    return read_psf_image(raw_data["psf"]).galsim_profile()


@pytest.fixture(scope="session")
def cpu_workers() -> int:
    return min(2, os.cpu_count() or 1)


@pytest.fixture(scope="session")
def tiny_sim(sim_config, tmp_path_factory, cpu_workers):
    """A tiny simulated set (train 96 / val 32 / test 48), shared by the training and evaluation tests."""
    from legato.simulation.simulate import simulate

    folder = tmp_path_factory.mktemp("tiny") / "simulated"
    simulate(replace(sim_config, sizes={"train": 96, "val": 32, "test": 48}, seed=3), folder, workers=cpu_workers, progress=False)
    return folder


@pytest.fixture(scope="session")
def trained(tiny_sim, tmp_path_factory):
    """Arch1 and Arch2 trained for two epochs on the tiny set, logged to the session's MLflow store."""
    from legato.training.config import TrainConfig
    from legato.training.train import train

    out = tmp_path_factory.mktemp("models")
    summaries = {}
    for arch in ("arch1", "arch2"):
        config = TrainConfig(arch=arch, epochs=2, batch_size=32, seed=1)
        summaries[arch] = train(config, tiny_sim, out / arch)
    return out, summaries


TOY_PRODUCTION = ProductionConfig(steps=6, batch_size=16, checkpoint_every=3, validation_stamps=16, calibration_stamps=32, seed=5)


@pytest.fixture(scope="session")
def tiny_noiseless(sim_config, tmp_path_factory, cpu_workers):
    """The galaxies of ``tiny_sim`` (same seed and sizes) without noise."""
    from legato.simulation.simulate import simulate

    folder = tmp_path_factory.mktemp("tiny") / "noiseless"
    simulate(
        replace(sim_config, sizes={"train": 96, "val": 32, "test": 48}, seed=3, noiseless=True), folder, workers=cpu_workers, progress=False
    )
    return folder


@pytest.fixture(scope="session")
def production(tiny_noiseless, tmp_path_factory):
    """A toy production estimator: 6 steps, finalised (calibrated uncertainties, input range, MLflow model)."""
    from legato.training.noise_aware import train_production
    from legato.training.noise_aware_finalize import finalize_production

    root = tmp_path_factory.mktemp("production")
    progress = train_production(TOY_PRODUCTION, tiny_noiseless, root / "checkpoint", log=lambda line: None)
    assert progress["finished"] and progress["step"] == 6
    summary = finalize_production(TOY_PRODUCTION, tiny_noiseless, root / "checkpoint", root / "estimator", progress)
    return root / "estimator", summary


@pytest.fixture(scope="session")
def band_config(sim_config, repo_root):
    """A two-band (F125W, F160W) noiseless simulation config with a 10% PSF jitter: train 40 / val 8 / test 8."""
    from legato.simulation.simulate import BandMixture

    psf = str(repo_root / "data/psf/wfc3ir_f125w_psf.fits")
    mixture = BandMixture(
        psfs={"F125W": psf, "F160W": sim_config.psf},
        catalogs={"F125W": str(repo_root / "data/vanderwel2014_3dhst/cosmos_3dhst.v4.1_f125w.galfit"), "F160W": sim_config.catalog},
        weights={"F125W": 1.0, "F160W": 1.0},
        psf_jitter=0.1,
    )
    return replace(sim_config, noiseless=True, bands=mixture, sizes={"train": 40, "val": 8, "test": 8})
