"""Domain adaptation (the paper's section 6.2, Figure 5 and Table 2).

For each size ``|B_i|`` a nested subset of pool B (4/5 train, 1/5 validation)
is used twice, with the same optimiser budget:

- **fine-tuned**: the simulation-trained network, its first convolutional
  block(s) frozen (``frozen_prefixes``: the low-level filters that see the
  pixels, which both domains share), every later layer trained at a low
  learning rate, starting from the simulation weights and target scaler;
- **from scratch**: the same architecture, freshly initialised, its target
  scaler fitted on ``B_i``.

Both are scored by R² per parameter on test A. Each is an MLflow run nested
under one parent run; the fine-tuned network of the largest ``B_i`` is saved
as an estimator folder and logged as an MLflow model ready to register.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from legato.errors import ConfigError
from legato.evaluation.metrics import PARAMETERS, r2_table

PAPER_SIZES = (50, 100, 200, 400, 600, 800, 1000, 1500, 2000, 3000, 4000)


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of the adaptation curve (the ``adapt`` section of params.yaml).

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
    finetune_learning_rate, scratch_learning_rate : float
        Initial Adam learning rates (cosine decay to zero over the run).
    frozen_prefixes : tuple of str
        Layers whose name starts with one of these stay frozen when fine-tuning.
    patience : int
        Early-stopping patience on the validation loss, epochs.
    input_noise : float
        Gaussian input noise of the from-scratch network (asinh units).
    seed : int
        Seed of the subsets, weights and shuffling.
    """

    sizes: tuple = PAPER_SIZES
    validation_fraction: float = 0.2
    epochs: int = 30
    max_steps: int = 200
    batch_size: int = 32
    finetune_learning_rate: float = 3e-4
    scratch_learning_rate: float = 1e-3
    frozen_prefixes: tuple = ("block",)
    patience: int = 5
    input_noise: float = 0.01
    seed: int = 7
    augment: bool = True

    def __post_init__(self):
        if not self.sizes or any(int(s) < 5 for s in self.sizes):
            raise ConfigError(f"adapt.sizes must be sizes of at least 5 galaxies, got {list(self.sizes)}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"adapt.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.epochs < 1 or self.max_steps < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("adapt.epochs, max_steps, batch_size and patience must be positive")

    @classmethod
    def from_params(cls, section: dict) -> AdaptConfig:
        """Settings from the ``adapt`` section (its ``base``, ``test``, ``pool`` and ``real`` keys are paths, not settings)."""
        values = {k: v for k, v in section.items() if k not in ("base", "test", "pool", "real", "out")}
        for key in ("sizes", "frozen_prefixes"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
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


def _fit(model, scaler, train_x, train_labels, val_x, val_labels, config: AdaptConfig, learning_rate: float, prefix: str):
    import keras

    from legato.training.data import make_dataset
    from legato.training.train import _epoch_logger

    epochs = epochs_for(len(train_x), config)
    steps = int(np.ceil(len(train_x) / config.batch_size)) * epochs
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)), loss="mse", jit_compile=False)
    train_ds = make_dataset(train_x, scaler.transform(train_labels), config.batch_size, True, config.augment, config.seed)
    val_ds = make_dataset(val_x, scaler.transform(val_labels), 256, False, False, config.seed)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop, _epoch_logger(prefix)], shuffle=False, verbose=0)
    return {"epochs": len(history.history["loss"]), "train_seconds": time.perf_counter() - start, "best_val_loss": float(min(history.history["val_loss"]))}


def finetuned_network(base_model, frozen_prefixes):
    """A trainable copy of the simulation network with the layers named by ``frozen_prefixes`` frozen."""
    import keras

    model = keras.models.clone_model(base_model)
    model.set_weights(base_model.get_weights())
    for layer in model.layers:
        layer.trainable = not layer.name.startswith(tuple(frozen_prefixes))
    return model


def scratch_network(architecture: str, n_outputs: int, stamp_size: int, input_noise: float, input_scale: float):
    """The same architecture freshly initialised (no dropout: no inference-mode shift to recalibrate)."""
    from legato.models.architectures import ARCHITECTURES

    return ARCHITECTURES[architecture](n_outputs=n_outputs, stamp_size=stamp_size, dropout=0.0, input_noise=input_noise, input_scale=input_scale)


def predict_network(model, scaler, stamps) -> dict[str, np.ndarray]:
    """Physical parameters from one network and its scaler."""
    from legato.models.targets import physical_columns

    outputs = np.concatenate([model(stamps[i : i + 512], training=False).numpy() for i in range(0, len(stamps), 512)])
    return physical_columns(scaler.inverse(outputs))


def save_estimator(model, scaler, folder: Path, stamp_size: int, **info) -> None:
    """Write a one-network estimator folder (network, scaler, manifest)."""
    from legato.models.estimator import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "network.keras")
    scaler.to_json(folder / "network_scaler.json")
    write_manifest(folder, [{"model": "network.keras", "scaler": "network_scaler.json", "targets": list(scaler.targets)}], stamp_size=stamp_size, **info)


def _rounded(values: dict) -> dict:
    return {k: (round(float(v), 4) if np.isfinite(v) else None) for k, v in values.items()}


def adaptation_curve(
    config: AdaptConfig,
    base_dir: str | Path,
    test_dir: str | Path,
    pool_dir: str | Path,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    experiment: str = "legato",
) -> dict:
    """Fine-tune versus from scratch over the sizes; R² on test A; the best adapted estimator saved and logged.

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
        ``figure5`` (sizes and R² per method and parameter), ``before`` / ``after`` R² on A,
        the parent run id and the adapted model URI.
    """
    import keras
    import mlflow

    from legato.models.estimator import LoadedEstimator
    from legato.models.targets import TargetScaler
    from legato.tracking import provenance_tags, start_tracking
    from legato.training.data import load_split
    from legato.training.train import log_estimator_model

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    base = LoadedEstimator(base_dir)
    if len(base.members) != 1:
        raise ConfigError(f"adaptation needs a multi-output estimator (one network); {base_dir} has {len(base.members)}")
    base_model, base_scaler = base.members[0]
    architecture = str(base.manifest.get("architecture", "arch1"))
    input_scale = float(base_model.get_layer("asinh_scaling").scale)
    test_x, test_labels, _ = load_split(test_dir)
    pool_x, pool_labels, _ = load_split(pool_dir)
    sizes = effective_sizes(config.sizes, len(pool_x))
    subsets = nested_subsets(len(pool_x), sizes, config.validation_fraction, config.seed)
    start_tracking(tracking_uri, experiment)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    curve = {"sizes": sizes, "requested_sizes": [int(s) for s in config.sizes], "finetuned": {p: [] for p in PARAMETERS}, "scratch": {p: [] for p in PARAMETERS}, "runs": []}
    with mlflow.start_run(run_name=f"adapt-{architecture}") as parent:
        mlflow.set_tags({"architecture": architecture, "method": "cnn", "training_domain": "realistic", "stage": "domain-adaptation", **provenance_tags(str(pool_dir))})
        mlflow.log_params({**{k: (",".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}, "base": str(base_dir), "n_test": len(test_x), "n_pool": len(pool_x)})
        before = r2_table(test_labels, base.predict(test_x))
        mlflow.log_metrics({f"A_r2_{p}_before": v for p, v in before.items()})
        best = None
        for size in sizes:
            train_rows, val_rows = subsets[int(size)]
            train_x, val_x = pool_x[train_rows], pool_x[val_rows]
            train_labels, val_labels = pool_labels[train_rows], pool_labels[val_rows]
            for method in ("finetuned", "scratch"):
                keras.utils.set_random_seed(config.seed + int(size))
                if method == "finetuned":
                    model, scaler, rate = finetuned_network(base_model, config.frozen_prefixes), base_scaler, config.finetune_learning_rate
                else:
                    scaler = TargetScaler.fit(train_labels, base_scaler.targets)
                    model = scratch_network(architecture, len(base_scaler.targets), pool_x.shape[1], config.input_noise, input_scale)
                    rate = config.scratch_learning_rate
                with mlflow.start_run(run_name=f"{method}-n{int(size):04d}", nested=True) as child:
                    mlflow.set_tags({"architecture": architecture, "method": method, "training_domain": "realistic-adapted" if method == "finetuned" else "realistic-scratch"})
                    mlflow.log_params({"size": int(size), "n_train": len(train_x), "n_val": len(val_x), "learning_rate": rate, "frozen": ",".join(config.frozen_prefixes) if method == "finetuned" else ""})
                    fit = _fit(model, scaler, train_x, train_labels, val_x, val_labels, config, rate, "")
                    r2 = r2_table(test_labels, predict_network(model, scaler, test_x))
                    mlflow.log_metrics({**{f"A_r2_{p}": v for p, v in r2.items() if np.isfinite(v)}, **fit})
                    for p in PARAMETERS:
                        curve[method][p].append(round(float(r2.get(p, np.nan)), 4))
                    curve["runs"].append({"size": int(size), "method": method, "run_id": child.info.run_id, **_rounded(fit), "epochs": fit["epochs"]})
                    if method == "finetuned" and (best is None or size >= best[0]):
                        best = (int(size), model, r2, child.info.run_id)
        size, model, after, run_id = best
        save_estimator(model, base_scaler, staging, pool_x.shape[1], architecture=architecture, mode="multi_output", training_domain="realistic-adapted", adapted_from=str(base_dir), adapted_on=size)
        with mlflow.start_run(run_id=run_id, nested=True):
            info = log_estimator_model(staging, test_x[:2])
        mlflow.log_metrics({f"A_r2_{p}_after": v for p, v in after.items()})
        summary = {"parent_run_id": parent.info.run_id, "run_id": run_id, "model_uri": info.model_uri, "architecture": architecture, "training_domain": "realistic-adapted", "adapted_on": size}
    (staging / "run.json").write_text(json.dumps(summary, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return {"figure5": curve, "before": _rounded(before), "after": _rounded(after), "n_test": len(test_x), "n_pool": len(pool_x), **summary}


def classical_versus_classical(test_labels) -> dict:
    """R² of the alternative classical fit against the main one on the test galaxies both set-ups fitted."""
    from legato.classical.labels import ALTERNATIVE_PREFIX, LABEL_COLUMNS, usable

    if f"{ALTERNATIVE_PREFIX}flags" not in test_labels.colnames:
        raise ConfigError("test A has no alternative classical fit (alt_* columns): run legato label-realistic")
    both = usable(test_labels[f"{ALTERNATIVE_PREFIX}flags"])
    truth = test_labels[both]
    other = {name: np.asarray(truth[ALTERNATIVE_PREFIX + name], dtype=float) for name in LABEL_COLUMNS if ALTERNATIVE_PREFIX + name in truth.colnames}
    return {"r2": _rounded(r2_table(truth, other)), "n": int(both.sum())}


def real_check(estimators: dict, real_dir: str | Path) -> dict:
    """Score estimators on a real labelled stamp set (few galaxies: report, do not tune).

    Returns
    -------
    dict
        Per estimator: R², median error per parameter and the number of galaxies scored.
    """
    from legato.evaluation.metrics import COLUMN, errors
    from legato.models.estimator import LoadedEstimator
    from legato.training.data import load_split

    stamps, labels, _ = load_split(real_dir)
    report = {"n": len(stamps), "source": str(real_dir), "estimators": {}}
    for name, folder in estimators.items():
        values = LoadedEstimator(folder).predict(stamps)
        report["estimators"][name] = {
            "r2": _rounded(r2_table(labels, values)),
            "median_error": _rounded({p: float(np.nanmedian(errors(p, labels[COLUMN[p]], values[COLUMN[p]]))) for p in PARAMETERS}),
        }
    return report
