"""Domain adaptation (the paper's section 6.2, Figure 5 and Table 2).

The base is the simulation-trained estimator (the production network: noise
aware, with a Gaussian uncertainty head; an Arch1/Arch2 estimator works too).
For each size ``|B_i|`` a nested subset of pool B (4/5 train, 1/5 validation)
is used twice, with the same optimiser budget:

- **fine-tuned**: the base network, the layers named by the chosen set-up's
  ``frozen_prefixes`` frozen, every other layer trained from the simulation
  weights and target scaler;
- **from scratch**: the same architecture, freshly initialised, its target
  scaler fitted on ``B_i``.

The fine-tuning set-up (which layers stay frozen, the learning rate) is chosen
by measurement before the curve: every candidate in ``setups`` is fine-tuned on
the ``selection_size`` subset of B and scored on that subset's own validation
galaxies (never on test A). The whole curve is repeated for every seed in
``seeds`` (new subsets, new initialisations, new batch order), so each Figure 5
and Table 2 number comes with its run-to-run scatter.

Every run is an MLflow run nested under one parent; the fine-tuned network of
the largest ``B_i`` of the first seed is saved as an estimator folder (a
production estimator keeps its input range, its uncertainties recalibrated on
its validation galaxies) and logged as an MLflow model ready to register.

A PSF-conditioned base (the scene-trained estimator, docs/scenes.md) is
adapted with the F160W PSF as its second input: the realistic domain is
F160W, drawn with a PSF jittered around the nominal one and labelled with the
nominal one, so the network is told the nominal PSF, as a user with that
band's PSF model would tell it. Its adapted uncertainties are calibrated
apart for the stamps the blend detector flags, like the base's.

With ``deblend_grow_pix`` set, pool B and test A are seen the way a deblended
estimator's base sees them (:mod:`legato.models.deblending`: the blend
detector's neighbours replaced by the target's point-mirror or sky noise), and
the adapted network is saved inside a deblended estimator folder, so that every
inference path removes the neighbours before it measures. Its intervals are
calibrated on the deblended validation stamps, apart for those flagged
``BLENDED`` on the stamps as given (the flag every row carries).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from legato.classical.labels import classical_versus_classical  # noqa: F401  (Table 2's third column; part of this module's API)
from legato.columns import PARAMETERS
from legato.errors import ConfigError
from legato.io.folders import publish_folder
from legato.stats import r2_table

PAPER_SIZES = (50, 100, 200, 400, 600, 800, 1000, 1500, 2000, 3000, 4000)
METHODS = ("finetuned", "scratch")


@dataclass(frozen=True)
class FineTuning:
    """One fine-tuning set-up: the layers kept frozen and the initial learning rate.

    Attributes
    ----------
    frozen_prefixes : tuple of str
        Layers whose name starts with one of these stay frozen.
    learning_rate : float
        Initial Adam learning rate (cosine decay to zero over the run).
    """

    frozen_prefixes: tuple = ("block1",)
    learning_rate: float = 3e-4

    def describe(self) -> str:
        """``frozen=block1 lr=0.0003``."""
        return f"frozen={','.join(self.frozen_prefixes) or 'none'} lr={self.learning_rate:g}"


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of the adaptation experiment (the ``adapt`` section of params.yaml).

    Attributes
    ----------
    sizes : tuple of int
        Sizes of the nested subsets ``B_i`` of pool B.
    validation_fraction : float
        Part of each ``B_i`` held out for early stopping (the paper: 1/5).
    epochs : int
        Largest number of epochs of a run.
    max_steps : int
        Largest number of optimiser steps of a run (the same budget for both methods).
    batch_size : int
        Stamps per step.
    setups : dict
        Candidate fine-tuning set-ups, name -> :class:`FineTuning`.
    selection_size : int
        Size of the subset of B on which the set-ups are compared.
    scratch_learning_rate : float
        Initial Adam learning rate of the from-scratch networks.
    patience : int
        Early-stopping patience on the validation loss, epochs.
    input_noise : float
        Gaussian input noise of a from-scratch Arch1/Arch2 network (asinh units).
    seeds : tuple of int
        One repetition of the curve per seed (subsets, weights, shuffling).
    augment : bool
        Random flips and 90-degree rotations of the training stamps.
    deblend_grow_pix : int, optional
        Adapt on the stamps with their neighbours removed, the segments grown by this many pixels, and save a
        deblended estimator (None: the stamps as given).
    """

    sizes: tuple = PAPER_SIZES
    validation_fraction: float = 0.2
    epochs: int = 30
    max_steps: int = 200
    batch_size: int = 32
    setups: dict = field(default_factory=lambda: {"frozen_block1": FineTuning()})
    selection_size: int = 400
    scratch_learning_rate: float = 1e-3
    patience: int = 5
    input_noise: float = 0.01
    seeds: tuple = (7,)
    augment: bool = True
    deblend_grow_pix: int | None = None

    def __post_init__(self):
        if not self.sizes or any(int(s) < 5 for s in self.sizes):
            raise ConfigError(f"adapt.sizes must be sizes of at least 5 galaxies, got {list(self.sizes)}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"adapt.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.epochs < 1 or self.max_steps < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("adapt.epochs, max_steps, batch_size and patience must be positive")
        if not self.setups or not self.seeds:
            raise ConfigError("adapt.setups and adapt.seeds must each name at least one entry")
        if self.deblend_grow_pix is not None and (isinstance(self.deblend_grow_pix, bool) or int(self.deblend_grow_pix) < 0):
            raise ConfigError(f"adapt.deblend_grow_pix must be a number of pixels >= 0, got {self.deblend_grow_pix!r}")

    @classmethod
    def from_params(cls, section: dict) -> AdaptConfig:
        """Settings from the ``adapt`` section (its ``base``, ``test``, ``pool``, ``real`` and ``out`` keys are paths, not settings)."""
        values = {k: v for k, v in section.items() if k not in ("base", "test", "pool", "real", "out")}
        for key in ("sizes", "seeds"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            if "setups" in values:
                values["setups"] = {
                    str(name): FineTuning(tuple(setup.get("frozen_prefixes") or ()), float(setup["learning_rate"]))
                    for name, setup in dict(values["setups"]).items()
                }
            return cls(**values)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"bad adapt parameters: {exc}") from None


def effective_sizes(sizes, n_pool: int) -> list[int]:
    """The sizes, those beyond the pool replaced by the whole pool (labelling drops a few per cent of B)."""
    return sorted({min(int(s), n_pool) for s in sizes})


def nested_subsets(n_pool: int, sizes, validation_fraction: float, seed: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Row indices (train, validation) of nested subsets of a pool: each ``B_i`` contains the smaller ones.

    Raises
    ------
    ConfigError
        When a size exceeds the pool.
    """
    too_big = [s for s in sizes if s > n_pool]
    if too_big:
        raise ConfigError(f"adapt size(s) {too_big} exceed the {n_pool} labelled galaxies of pool B")
    order = np.random.default_rng(seed).permutation(n_pool)
    subsets = {}
    for size in sizes:
        rows = order[:size]
        n_val = max(1, int(round(size * validation_fraction)))
        subsets[int(size)] = (rows[n_val:], rows[:n_val])
    return subsets


def epochs_for(n_train: int, config: AdaptConfig) -> int:
    """Epochs of a run: ``config.epochs``, fewer when that would exceed ``config.max_steps`` steps."""
    steps_per_epoch = max(1, int(np.ceil(n_train / config.batch_size)))
    return int(max(1, min(config.epochs, config.max_steps // steps_per_epoch)))


class AdaptationBase:
    """The simulation-trained estimator being adapted: its network, scaler, loss and a fresh copy of its architecture.

    Parameters
    ----------
    folder : str or Path
        Estimator folder with one multi-output network (a production estimator or Arch1/Arch2).

    Raises
    ------
    ConfigError
        If the estimator has more than one network.
    """

    def __init__(self, folder: str | Path):
        from legato.models.estimator import LoadedEstimator

        self.folder = Path(folder)
        self.estimator = LoadedEstimator(self.folder)
        if len(self.estimator.members) != 1:
            raise ConfigError(f"adaptation needs a multi-output estimator (one network); {folder} has {len(self.estimator.members)}")
        self.model, self.scaler = self.estimator.members[0]
        self.manifest = self.estimator.manifest
        self.production = self.manifest.get("kind") == "production"
        self.architecture = str(self.manifest.get("architecture", "arch1"))
        #: the PSF the realistic (F160W) stamps are given by a PSF-conditioned base; None without a PSF input
        self.psf = self.estimator.psf_condition() if self.estimator.psf_bands is not None else None

    @property
    def loss(self):
        """The training loss of this kind of network (mean + Gaussian likelihood for the production head, else MSE)."""
        if self.production:
            from legato.models.noise_aware import mean_and_variance_loss

            return mean_and_variance_loss
        return "mse"

    def finetuned(self, setup: FineTuning):
        """A trainable copy of the base network with the layers named by ``setup.frozen_prefixes`` frozen."""
        import keras

        model = keras.models.clone_model(self.model)
        model.set_weights(self.model.get_weights())
        for layer in model.layers:
            layer.trainable = not (setup.frozen_prefixes and layer.name.startswith(tuple(setup.frozen_prefixes)))
        return model

    def scratch(self, stamp_size: int, input_noise: float):
        """The same architecture freshly initialised (no dropout: no inference-mode shift to recalibrate)."""
        if self.production:
            from legato.models.noise_aware import build_production

            return build_production(self.estimator.reference_sigma, stamp_size=stamp_size, psf_inputs=0 if self.psf is None else 2)
        from legato.models.architectures import ARCHITECTURES

        scale = float(self.model.get_layer("asinh_scaling").scale)
        return ARCHITECTURES[self.architecture](
            n_outputs=len(self.scaler.targets), stamp_size=stamp_size, dropout=0.0, input_noise=input_noise, input_scale=scale
        )


def fit_network(model, scaler, loss, train, val, config: AdaptConfig, learning_rate: float, seed: int, psf=None) -> dict:
    """Train ``model`` on ``train`` = (stamps, labels) with early stopping on ``val``, within ``config``'s epoch and step
    budget; the fit summary. ``psf`` (a :class:`~legato.models.psf_condition.PsfCondition`) is every stamp's PSF for a
    PSF-conditioned network."""
    import keras

    from legato.training.data import make_dataset
    from legato.training.train import _epoch_logger

    (train_x, train_labels), (val_x, val_labels) = train, val
    epochs = epochs_for(len(train_x), config)
    steps = int(np.ceil(len(train_x) / config.batch_size)) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)), loss=loss, jit_compile=False
    )
    train_ds = make_dataset(train_x, scaler.transform(train_labels), config.batch_size, True, config.augment, seed, _features(psf, train_x))
    val_ds = make_dataset(val_x, scaler.transform(val_labels), 256, False, False, seed, _features(psf, val_x))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop, _epoch_logger("")], shuffle=False, verbose=0)
    return {
        "epochs": len(history.history["loss"]),
        "steps": steps,
        "train_seconds": time.perf_counter() - start,
        "best_val_loss": float(min(history.history["val_loss"])),
    }


def _features(psf, stamps: np.ndarray) -> np.ndarray | None:
    """The PSF input of ``stamps`` (None for a network without one)."""
    return None if psf is None else psf.features(len(stamps))


def predict_network(model, scaler, stamps, psf=None) -> dict[str, np.ndarray]:
    """Physical parameters from one network and its scaler (a Gaussian head's variances are ignored); ``psf`` as in
    :func:`fit_network`."""
    from legato.models.noise_aware import forward_in_batches
    from legato.models.targets import physical_columns

    outputs = forward_in_batches(model, stamps, psf=_features(psf, stamps))
    return physical_columns(scaler.inverse(outputs[:, : len(scaler.targets)]))


def save_estimator(model, scaler, folder: Path, base: AdaptationBase, calibration: tuple, blended=None, **info) -> None:
    """Write a one-network estimator folder (network, scaler, manifest) of an adapted network.

    A production network keeps the base's reference noise and input range (and a PSF-conditioned one its
    ``psf_input`` bands); its uncertainty factors are recalibrated on ``calibration`` (validation stamps and labels
    of its own domain), apart for the stamps the blend detector flags when the base's were or when ``blended`` is
    given: bool ``(N,)``, the flags of the calibration stamps as given (a deblended network passes those of the
    stamps before deblending, which its rows carry; default: measured on ``calibration``'s stamps).
    """
    from legato.models.estimator import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "network.keras")
    scaler.to_json(folder / "network_scaler.json")
    member = {"model": "network.keras", "scaler": "network_scaler.json", "targets": list(scaler.targets)}
    extra = {"architecture": base.architecture, "mode": "multi_output"}
    if base.production:
        from legato.io.stamp_checks import blend_measurements
        from legato.models.noise_aware import forward_in_batches, gaussian_sigma
        from legato.models.targets import to_network_space
        from legato.models.uncertainty import binned_calibration_scales, split_calibration

        stamps, labels = calibration
        outputs = forward_in_batches(model, stamps, psf=_features(base.psf, stamps))
        count = len(scaler.targets)
        mean = outputs[:, :count] * np.array(scaler.std) + np.array(scaler.mean)
        sigma = gaussian_sigma(outputs[:, count : 2 * count], scaler.std)
        arguments = (to_network_space(labels, scaler.targets), mean, sigma, mean[:, 0], base.manifest["uncertainty"]["mag_edges"])
        apart = blended is not None or "blended" in base.manifest["uncertainty"]
        blended = blend_measurements(stamps)[1] if blended is None else np.asarray(blended, dtype=bool)
        if apart and 0 < blended.sum() < len(blended):
            scales = split_calibration(*arguments, np.ones(len(stamps)), (), blended)
        else:
            scales = binned_calibration_scales(*arguments)
            if apart:  # no stamp of one kind to calibrate apart: both share the factors
                scales["blended"] = dict(scales)
        member["head"] = "gaussian"
        extra.update(
            kind="production", reference_sigma=base.estimator.reference_sigma, uncertainty={**scales, "calibrated_on": len(stamps)}
        )
        for key in ("input_range", "psf_input"):
            if base.manifest.get(key):
                extra[key] = base.manifest[key]
    write_manifest(folder, [member], stamp_size=base.estimator.stamp_size, **extra, **info)


def _rounded(values: dict) -> dict:
    return {k: (round(float(v), 4) if v is not None and np.isfinite(v) else None) for k, v in values.items()}


def _mean_r2(values: dict) -> float:
    finite = [v for v in values.values() if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("-inf")


def select_setup(base: AdaptationBase, pool: tuple, config: AdaptConfig, log_run) -> tuple[str, dict]:
    """Compare the fine-tuning set-ups on the ``selection_size`` subset of B (scored on its own validation galaxies).

    Returns
    -------
    name : str
        The set-up with the highest mean validation R².
    scores : dict
        Per set-up: its description, validation R² per parameter and the fit summary.
    """
    import keras

    pool_x, pool_labels = pool
    seed = int(config.seeds[0])
    size = min(int(config.selection_size), len(pool_x))
    train_rows, val_rows = nested_subsets(len(pool_x), [size], config.validation_fraction, seed)[size]
    scores = {}
    for name, setup in config.setups.items():
        keras.utils.set_random_seed(seed)
        model = base.finetuned(setup)
        train, val = (pool_x[train_rows], pool_labels[train_rows]), (pool_x[val_rows], pool_labels[val_rows])
        fit = fit_network(model, base.scaler, base.loss, train, val, config, setup.learning_rate, seed, base.psf)
        r2 = r2_table(pool_labels[val_rows], predict_network(model, base.scaler, pool_x[val_rows], base.psf))
        scores[name] = {
            "setup": setup.describe(),
            "validation_r2": _rounded(r2),
            "mean_validation_r2": round(_mean_r2(r2), 4),
            **_rounded(fit),
        }
        log_run(
            f"select-{name}-n{size:04d}",
            {"method": "finetuned", "selection": "true"},
            {"size": size, "setup": name, **asdict(setup)},
            {**{f"B_val_r2_{p}": v for p, v in r2.items() if np.isfinite(v)}, **fit},
        )
    best = max(scores, key=lambda n: scores[n]["mean_validation_r2"])
    return best, scores


GATE_SUBSET = "realistic_a"  # promotion gates on test A compare test_r2_<parameter>_realistic_a


def log_gate_metrics(run_id: str, r2: dict) -> None:
    """Log R² on test A as the gate metrics ``test_r2_<parameter>_realistic_a`` of a run (``legato promote --subset realistic_a``)."""
    from mlflow import MlflowClient

    from legato.registry.versions import gate_metric

    client = MlflowClient()
    for p, value in r2.items():
        if value is not None and np.isfinite(value):
            client.log_metric(run_id, gate_metric(p, GATE_SUBSET), float(value))


def _base_run(base_dir: Path) -> dict:
    path = base_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _summaries(per_seed: dict, sizes: list) -> dict:
    """Mean and standard deviation over seeds of each method's R² per parameter and size."""
    out = {}
    for method in METHODS:
        values = {p: np.array([[per_seed[s][method][p][k] for s in per_seed] for k in range(len(sizes))], dtype=float) for p in PARAMETERS}
        out[method] = {p: [round(float(np.nanmean(v[k])), 4) for k in range(len(sizes))] for p, v in values.items()}
        out[f"{method}_std"] = {p: [round(float(np.nanstd(v[k])), 4) for k in range(len(sizes))] for p, v in values.items()}
    return out


def child_run_logger(architecture: str, runs: list):
    """A function logging one nested MLflow run (name, tags, params, metrics) and recording it in ``runs``; returns its id."""
    import mlflow

    def log_run(name: str, tags: dict, params: dict, metrics: dict) -> str:
        with mlflow.start_run(run_name=name, nested=True) as child:
            mlflow.set_tags({"architecture": architecture, **tags})
            mlflow.log_params(params)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
            runs.append(
                {
                    "name": name,
                    "run_id": child.info.run_id,
                    **params,
                    **_rounded({k: v for k, v in metrics.items() if k in ("train_seconds", "best_val_loss")}),
                    "epochs": metrics.get("epochs"),
                }
            )
            return child.info.run_id

    return log_run


def _log_parent_run(config: AdaptConfig, base: AdaptationBase, base_dir: Path, pool_dir, n_test: int, n_pool: int) -> None:
    import mlflow

    from legato.tracking import provenance_tags

    mlflow.set_tags(
        {
            "architecture": base.architecture,
            "method": "cnn",
            "training_domain": "realistic",
            "stage": "domain-adaptation",
            **provenance_tags(str(pool_dir)),
        }
    )
    plain = {k: v for k, v in asdict(config).items() if k != "setups"}
    mlflow.log_params(
        {
            **{k: (",".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in plain.items()},
            "base": str(base_dir),
            "n_test": n_test,
            "n_pool": n_pool,
        }
    )


def adaptation_runs(base: AdaptationBase, setup: FineTuning, config: AdaptConfig, pool: tuple, test: tuple, sizes: list, log_run):
    """Fine-tuned and from-scratch networks over the seeds and the nested sizes of B, each scored on test A.

    Returns
    -------
    per_seed : dict
        Seed -> method -> parameter -> R² on A per size.
    kept : tuple
        ``(size, model, scaler, run_id, val, val_rows)`` of the fine-tuned network of the first seed at the largest size.
    """
    import keras

    from legato.models.targets import TargetScaler

    (pool_x, pool_labels), (test_x, test_labels) = pool, test
    per_seed, kept = {}, None
    for seed in config.seeds:
        seed = int(seed)
        subsets = nested_subsets(len(pool_x), sizes, config.validation_fraction, seed)
        per_seed[seed] = {m: {p: [] for p in PARAMETERS} for m in METHODS}
        for size in sizes:
            train_rows, val_rows = subsets[int(size)]
            train, val = (pool_x[train_rows], pool_labels[train_rows]), (pool_x[val_rows], pool_labels[val_rows])
            for method in METHODS:
                keras.utils.set_random_seed(seed + int(size))
                if method == "finetuned":
                    model, scaler, rate = base.finetuned(setup), base.scaler, setup.learning_rate
                else:
                    model, scaler, rate = (
                        base.scratch(pool_x.shape[1], config.input_noise),
                        TargetScaler.fit(train[1], base.scaler.targets),
                        config.scratch_learning_rate,
                    )
                fit = fit_network(model, scaler, base.loss, train, val, config, rate, seed, base.psf)
                r2 = r2_table(test_labels, predict_network(model, scaler, test_x, base.psf))
                tags = {"method": method, "training_domain": "realistic-adapted" if method == "finetuned" else "realistic-scratch"}
                params = {
                    "size": int(size),
                    "seed": seed,
                    "n_train": len(train_rows),
                    "n_val": len(val_rows),
                    "learning_rate": rate,
                    "frozen": ",".join(setup.frozen_prefixes) if method == "finetuned" else "",
                }
                run_id = log_run(f"{method}-n{int(size):04d}-s{seed}", tags, params, {**{f"A_r2_{p}": v for p, v in r2.items()}, **fit})
                for p in PARAMETERS:
                    per_seed[seed][method][p].append(round(float(r2.get(p, np.nan)), 4))
                if method == "finetuned" and seed == int(config.seeds[0]) and size == sizes[-1]:
                    kept = (int(size), model, scaler, run_id, val, val_rows)
    return per_seed, kept


def adapted_domain(grow_pix) -> str:
    """The ``training_domain`` of an adapted estimator: ``realistic-adapted``, ``+deblended`` when it removes neighbours."""
    return "realistic-adapted" + ("" if grow_pix is None else "+deblended")


def _publish_adapted(
    kept: tuple,
    base: AdaptationBase,
    base_dir: Path,
    staging: Path,
    chosen: str,
    setup: FineTuning,
    given: tuple,
    pool_dir,
    base_run: dict,
    grow_pix,
):
    """Save the kept fine-tuned network as an estimator folder (inside a deblended one when ``grow_pix`` is not None)
    and log it, with its lineage, to its run; the model info. ``given``: ``(test A, its labels, pool B)`` as given."""
    import mlflow

    from legato.io.stamp_checks import blend_measurements
    from legato.models.deblending import write_deblended_estimator
    from legato.serving.pyfunc import log_estimator_model
    from legato.tracking import provenance_tags
    from legato.validation.scoring_set import evaluation_data_status

    size, model, scaler, run_id, val, val_rows = kept
    test_x, test_labels, pool_given = given
    network = staging if grow_pix is None else staging.with_name(staging.name + ".network")
    save_estimator(
        model,
        scaler,
        network,
        base,
        val,
        blended=None if grow_pix is None else blend_measurements(pool_given[val_rows])[1],
        training_domain="realistic-adapted",
        adapted_from=str(base_dir),
        adapted_on=size,
        finetuning_setup={"name": chosen, **asdict(setup)},
    )
    if grow_pix is not None:
        write_deblended_estimator(network, staging, grow_pix, info={"base_domain": "realistic-adapted", "adapted_on": size})
        shutil.rmtree(network)
    with mlflow.start_run(run_id=run_id, nested=True):
        info = log_estimator_model(staging, test_x[:2])
        status = evaluation_data_status(test_x, test_labels)  # the promotion gate's check of test A
        mlflow.set_tags(
            {
                **provenance_tags(str(pool_dir)),
                "training_domain": adapted_domain(grow_pix),
                "finetuning_setup": f"{chosen}: {setup.describe()}",
                "validation": status.split(":")[0],
                "validation_detail": status,
                **{f"adapted_from_{k}": v for k, v in base_run.items() if k in ("run_id", "model_uri")},
            }
        )
    return info


def adaptation_curve(
    config: AdaptConfig,
    base_dir: str | Path,
    test_dir: str | Path,
    pool_dir: str | Path,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    experiment: str = "legato",
) -> dict:
    """Set-up selection, then fine-tune versus from scratch over the sizes and seeds; R² on test A; the adapted estimator saved and logged.

    Parameters
    ----------
    config : AdaptConfig
    base_dir : str or Path
        Simulation-trained estimator folder (one multi-output network).
    test_dir, pool_dir : str or Path
        Labelled stamp sets test A and pool B.
    out_dir : str or Path
        Folder of the adapted estimator (replaced atomically).

    Returns
    -------
    dict
        ``figure5`` (sizes; mean and standard deviation over seeds of R² per method and
        parameter; per-seed values; runs), ``selection``, ``before`` / ``after`` R² on A (``after_std``),
        the parent run id and the adapted model URI.
    """
    import mlflow

    from legato.io.stamps import load_split
    from legato.tracking import start_tracking

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    base = AdaptationBase(base_dir)
    test_x, test_labels, _ = load_split(test_dir)
    pool_x, pool_labels, _ = load_split(pool_dir)
    given = (test_x, test_labels, pool_x)
    if config.deblend_grow_pix is not None:
        from legato.models.deblending import deblended_stamps

        test_x, pool_x = (deblended_stamps(x, config.deblend_grow_pix) for x in (test_x, pool_x))
    sizes = effective_sizes(config.sizes, len(pool_x))
    start_tracking(tracking_uri, experiment)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    runs = []
    log_run = child_run_logger(base.architecture, runs)
    with mlflow.start_run(run_name=f"adapt-{base.architecture}") as parent:
        _log_parent_run(config, base, base_dir, pool_dir, len(test_x), len(pool_x))
        before = r2_table(test_labels, predict_network(base.model, base.scaler, test_x, base.psf))
        mlflow.log_metrics({f"A_r2_{p}_before": v for p, v in before.items() if np.isfinite(v)})
        base_run = _base_run(base_dir)
        if base_run.get("run_id"):  # the base's scores on A: the incumbent's side of the realistic-domain gate
            log_gate_metrics(base_run["run_id"], before)
        chosen, selection = select_setup(base, (pool_x, pool_labels), config, log_run)
        setup = config.setups[chosen]
        mlflow.set_tag("finetuning_setup", f"{chosen}: {setup.describe()}")
        test = (test_x, test_labels)
        per_seed, kept = adaptation_runs(base, setup, config, (pool_x, pool_labels), test, sizes, log_run)
        info = _publish_adapted(kept, base, base_dir, staging, chosen, setup, given, pool_dir, base_run, config.deblend_grow_pix)
        size, run_id = kept[0], kept[3]
        log_gate_metrics(run_id, {p: per_seed[int(config.seeds[0])]["finetuned"][p][-1] for p in PARAMETERS})
        summary_curve = _summaries(per_seed, sizes)
        after = {p: summary_curve["finetuned"][p][-1] for p in PARAMETERS}
        after_std = {p: summary_curve["finetuned_std"][p][-1] for p in PARAMETERS}
        mlflow.log_metrics({f"A_r2_{p}_after": v for p, v in after.items() if v is not None and np.isfinite(v)})
        summary = {
            "parent_run_id": parent.info.run_id,
            "run_id": run_id,
            "model_uri": info.model_uri,
            "architecture": base.architecture,
            "training_domain": adapted_domain(config.deblend_grow_pix),
            "adapted_on": size,
            "adapted_from": str(base_dir),
        }
    (staging / "run.json").write_text(json.dumps(summary, indent=2))
    publish_folder(staging, out_dir)
    curve = {
        "sizes": sizes,
        "requested_sizes": [int(s) for s in config.sizes],
        "seeds": [int(s) for s in config.seeds],
        **summary_curve,
        "per_seed": {str(s): v for s, v in per_seed.items()},
        "runs": runs,
    }
    return {
        "figure5": curve,
        "selection": {"chosen": chosen, "size": min(int(config.selection_size), len(pool_x)), "setups": selection},
        "before": _rounded(before),
        "after": after,
        "after_std": after_std,
        "n_test": len(test_x),
        "n_pool": len(pool_x),
        **summary,
    }
