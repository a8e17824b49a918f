"""Resumable training of the production estimator (``legato train-production``).

The network (:mod:`legato.models.noise_aware`) learns from the noiseless
single-Sérsic models (``legato simulate --noiseless``) with fresh noise drawn
at every step over a range of survey depths (:mod:`legato.training.noisy_batches`).
Every ``checkpoint_every`` steps the network, its optimizer state and the
progress are written atomically to a checkpoint folder; a later call continues
from there and, because batch ``k`` is a pure function of ``(seed, k)``,
reaches the same weights as an uninterrupted run. When all steps are done the
estimator is finalised: uncertainties calibrated on the validation split, the
input range measured, a manifest and model card written and the model logged
to MLflow (:mod:`legato.training.noise_aware_finalize`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from legato.errors import ConfigError
from legato.simulation.noise import NoiseModel
from legato.training.noisy_batches import DepthRange
from legato.training.scenes import SceneModel

CHECKPOINT_MODEL = "network.keras"
CHECKPOINT_STATE = "state.json"
SNAPSHOT_EVERY = 5_000  # steps between kept copies of the network (learning-curve benchmark)
SNAPSHOTS = "snapshots"
TRAINING_FIELDS = ("steps", "batch_size", "learning_rate", "depths", "seed", "scenes", "psf_input")


@dataclass(frozen=True)
class ProductionConfig:
    """Recipe of the production estimator (the ``production`` section of params.yaml).

    Attributes
    ----------
    steps : int
        Optimizer steps in all (the cosine schedule decays to zero over them).
    batch_size : int
        Stamps per step.
    learning_rate : float
        Initial Adam learning rate.
    checkpoint_every : int
        Steps between checkpoints (and validation metrics).
    depths : DepthRange
        Survey depths drawn at training time.
    validation_stamps : int
        Validation galaxies scored at every checkpoint.
    calibration_stamps : int
        Validation stamps calibrating the uncertainties (the validation galaxies at random depths, repeated as needed).
    seed : int
        Seed of the weights and of every batch.
    scenes : SceneModel or None
        Train on crowded stamps composed on the fly (:mod:`legato.training.scenes`);
        None: isolated galaxies (the published production estimator's recipe).
    psf_input : bool
        A PSF-conditioned network: the training set's per-galaxy PSF summary
        (``psf_fwhm_arcsec``, ``psf_r50_arcsec``) is a second input.
    """

    steps: int = 60_000
    batch_size: int = 64
    learning_rate: float = 1e-3
    checkpoint_every: int = 1_000
    depths: DepthRange = field(default_factory=DepthRange)
    validation_stamps: int = 2_000
    calibration_stamps: int = 15_000
    seed: int = 2026
    scenes: SceneModel | None = None
    psf_input: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ConfigError("steps, batch_size and checkpoint_every must be positive")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.validation_stamps < 1 or self.calibration_stamps < 1:
            raise ConfigError("validation_stamps and calibration_stamps must be positive")

    @classmethod
    def from_params(cls, params: dict, overrides: dict | None = None, section: str = "production") -> ProductionConfig:
        """A section of params.yaml (``production``, or ``scenes`` for the scene-trained recipe), then ``overrides`` (None
        values ignored)."""
        values = dict(params.get(section) or {})
        values.pop("out", None)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown production parameter(s): {', '.join(sorted(unknown))}")
        depths = values.pop("depths", None) or {}
        if isinstance(depths, dict):
            try:
                depths = DepthRange(**{k: tuple(v) for k, v in depths.items()})
            except TypeError as exc:
                raise ConfigError(f"bad production.depths: {exc}") from None
        scenes = values.pop("scenes", None)
        if isinstance(scenes, dict):
            try:
                scenes = SceneModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in scenes.items()})
            except TypeError as exc:
                raise ConfigError(f"bad scenes parameters: {exc}") from None
        try:
            return cls(depths=depths, scenes=scenes, **values)
        except TypeError as exc:
            raise ConfigError(f"bad production parameters: {exc}") from None

    def as_dict(self) -> dict:
        """Plain values (for MLflow parameters and the model card)."""
        values = asdict(self)
        values["depths"] = {k: list(v) for k, v in values["depths"].items()}
        if values["scenes"] is None:  # the isolated recipe reads as it did before scenes existed
            del values["scenes"]
        else:
            values["scenes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in values["scenes"].items()}
        if not values["psf_input"]:
            del values["psf_input"]
        return values


def training_recipe(values: dict) -> dict:
    """The recipe entries that decide the weights (a checkpoint continues only under the same ones)."""
    return {k: values.get(k) for k in TRAINING_FIELDS}


def compile_network(model, config: ProductionConfig):
    """Compile ``model`` with Adam on a cosine schedule over ``config.steps`` and the mean+variance loss."""
    import keras

    from legato.models.noise_aware import mean_and_variance_loss

    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.steps)
    # XLA (Keras' "auto" on TensorFlow) is slower on this CPU for these networks
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=mean_and_variance_loss, jit_compile=False)
    return model


@dataclass
class TrainingState:
    """Progress stored beside the checkpointed network."""

    step: int = 0
    run_id: str | None = None
    seconds: float = 0.0
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)


def read_state(checkpoint_dir: Path) -> TrainingState | None:
    """The checkpoint's state, or None when there is no complete checkpoint."""
    state_path = checkpoint_dir / CHECKPOINT_STATE
    if not (state_path.is_file() and (checkpoint_dir / CHECKPOINT_MODEL).is_file()):
        return None
    return TrainingState(**json.loads(state_path.read_text()))


def write_checkpoint(checkpoint_dir: Path, model, state: TrainingState) -> None:
    """Write network (with optimizer state) and progress; each file replaced atomically, state last."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    partial = checkpoint_dir / f".{CHECKPOINT_MODEL}.partial.keras"
    model.save(partial)
    os.replace(partial, checkpoint_dir / CHECKPOINT_MODEL)
    if state.step % SNAPSHOT_EVERY == 0:
        (checkpoint_dir / SNAPSHOTS).mkdir(exist_ok=True)
        shutil.copyfile(checkpoint_dir / CHECKPOINT_MODEL, checkpoint_dir / SNAPSHOTS / f"step_{state.step:06d}.keras")
    text = json.dumps(asdict(state), indent=2)
    partial_state = checkpoint_dir / f".{CHECKPOINT_STATE}.partial"
    partial_state.write_text(text)
    os.replace(partial_state, checkpoint_dir / CHECKPOINT_STATE)


class BatchPrefetcher:
    """Builds batch ``k + 1`` in a thread while step ``k`` trains."""

    def __init__(self, make_batch, first: int, last: int):
        self._make, self._next, self._last = make_batch, first, last
        self._thread, self._result = None, None
        self._launch()

    def _launch(self):
        if self._next >= self._last:
            self._thread = None
            return
        step = self._next

        def work():
            self._result = self._make(step)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self):
        while self._thread is not None:
            self._thread.join()
            batch, step = self._result, self._next
            self._next += 1
            self._launch()
            yield step, batch


def train_production(
    config: ProductionConfig,
    data_dir: str | Path,
    checkpoint_dir: str | Path,
    max_seconds: float | None = None,
    tracking_uri: str | None = None,
    experiment: str = "legato",
    log=print,
) -> dict:
    """Run (or continue) the production training up to ``config.steps`` or ``max_seconds``.

    Parameters
    ----------
    config : ProductionConfig
        The recipe.
    data_dir : str or Path
        Noiseless set with ``train/`` and ``val/`` (``legato simulate --noiseless``).
    checkpoint_dir : str or Path
        Checkpoint folder; continued from when it holds a checkpoint of the same recipe.
    max_seconds : float, optional
        Stop (after writing a checkpoint) once this much wall time has passed in this call.
    tracking_uri, experiment : str
        MLflow store and experiment; the run is continued across calls.
    log : callable
        Progress printer.

    Returns
    -------
    dict
        ``step``, ``steps``, ``finished`` (bool), ``run_id``, ``seconds`` (all calls), the last validation metrics.

    Raises
    ------
    ConfigError
        When the checkpoint was written by a different recipe.
    """
    import mlflow

    import legato.models.noise_aware  # noqa: F401  (registers the custom layers and loss)
    from legato.models.noise_aware import N_TARGETS, forward_in_batches
    from legato.models.targets import TargetScaler, physical_columns
    from legato.stats import r2_table
    from legato.tracking import provenance_tags, start_tracking, training_domain

    data_dir, checkpoint_dir = Path(data_dir), Path(checkpoint_dir)
    (train_models, train_labels), (val_models, val_labels), header = training_sets(data_dir)
    noise = noiseless_set_noise(header, data_dir)
    scaler = TargetScaler.fit(train_labels)
    state, model = open_checkpoint(checkpoint_dir, config, noise, train_models.shape[1], log)
    scaler.to_json(checkpoint_dir / "scaler.json")
    val_x, val_psf, val_labels = validation_stamps(config, val_models, val_labels, scaler, noise)

    start_tracking(tracking_uri, experiment)
    run = resume_or_start_run(state.run_id)
    state.run_id = run.info.run_id
    if state.step == 0:
        mlflow.set_tags(
            {
                "architecture": "production",
                "training_domain": training_domain(config.as_dict()),
                "method": "cnn",
                **provenance_tags(str(data_dir)),
            }
        )
        mlflow.log_params(
            {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in config.as_dict().items()} | {"n_train": len(train_models)}
        )
    make_batch = batch_maker(config, train_models, scaler.transform(train_labels), train_labels, noise)

    began = time.perf_counter()
    last_metrics: dict = {}
    losses = []
    try:
        for step, batch in BatchPrefetcher(make_batch, state.step, config.steps):
            x, y = batch[0], batch[1]
            losses.append(float(model.train_on_batch(x if len(batch) == 2 else [x, batch[2]], y)))
            done = step + 1
            out_of_time = max_seconds is not None and time.perf_counter() - began >= max_seconds
            if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
                outputs = forward_in_batches(model, val_x, psf=val_psf)
                r2 = r2_table(val_labels, physical_columns(scaler.inverse(outputs[:, :N_TARGETS])))
                last_metrics = {"train_loss": float(np.mean(losses)), **{f"val_r2_{p}": float(v) for p, v in r2.items() if np.isfinite(v)}}
                mlflow.log_metrics(last_metrics, step=done)
                elapsed = time.perf_counter() - began
                state.step, losses = done, []
                state.history.append(
                    {"step": done, "seconds": round(state.seconds + elapsed, 1), **{k: round(v, 5) for k, v in last_metrics.items()}}
                )
                write_checkpoint(checkpoint_dir, model, replace(state, seconds=round(state.seconds + elapsed, 1)))
                log(f"step {done}/{config.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in last_metrics.items()))
                if out_of_time and done < config.steps:
                    break
    finally:
        mlflow.end_run()
    state.seconds = round(state.seconds + time.perf_counter() - began, 1)
    final = read_state(checkpoint_dir) or state
    return {
        "step": final.step,
        "steps": config.steps,
        "finished": final.step >= config.steps,
        "run_id": state.run_id,
        "seconds": final.seconds,
        **last_metrics,
    }


def training_sets(data_dir: Path):
    """The noiseless train and val splits ``((models, labels), (models, labels), header)``; a multi-band set's
    magnitudes moved onto the F160W zeropoint (:func:`~legato.models.noise_aware.reference_band_mag`)."""
    from legato.io.stamps import load_split
    from legato.models.noise_aware import reference_band_mag

    train_models, train_labels, header = load_split(data_dir / "train")
    val_models, val_labels, _ = load_split(data_dir / "val")
    for labels in (train_labels, val_labels):
        if "zeropoint" in labels.colnames:
            labels["mag"] = reference_band_mag(labels["mag"], labels["zeropoint"])
    return (train_models, train_labels), (val_models, val_labels), header


def open_checkpoint(checkpoint_dir: Path, config: ProductionConfig, noise: NoiseModel, stamp_size: int, log=print):
    """The checkpoint's state and compiled network to continue from, or a new network seeded by ``config.seed``.

    Raises
    ------
    ConfigError
        When the checkpoint was written by a different recipe.
    """
    import keras

    from legato.models.noise_aware import build_production

    state = read_state(checkpoint_dir)
    if state is not None and training_recipe(state.config) != training_recipe(config.as_dict()):
        raise ConfigError(
            f"the checkpoint in {checkpoint_dir} was written by another recipe; "
            "use the same production parameters or another --checkpoint folder"
        )
    keras.utils.set_random_seed(config.seed)
    if state is None:
        state = TrainingState(config=config.as_dict())
        network = build_production(noise.sky_sigma, stamp_size=stamp_size, psf_inputs=2 if config.psf_input else 0)
        model = compile_network(network, config)
    else:
        model = keras.saving.load_model(checkpoint_dir / CHECKPOINT_MODEL, compile=True)
        log(f"continuing from step {state.step} of {config.steps} ({checkpoint_dir})")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    return state, model


def validation_stamps(config: ProductionConfig, val_models: np.ndarray, val_labels, scaler, noise: NoiseModel):
    """The fixed monitoring stamps ``(stamps, psf inputs or None, labels)`` of the first ``validation_stamps`` val galaxies."""
    from legato.training.noisy_batches import noisy_copies
    from legato.training.scenes import scene_stamps

    count = min(config.validation_stamps, len(val_models))
    if config.scenes is not None or config.psf_input:  # scenes (isolated ones when scenes is None) with the PSF input where asked
        library = scene_library(val_models[:count], scaler.transform(val_labels[:count]), val_labels[:count], config)
        rng = np.random.default_rng([config.seed, 1])
        stamps, _ = scene_stamps(library, np.arange(count), config.scenes or ISOLATED, noise, config.depths, rng)
        return stamps, library.extra, val_labels[:count]
    rng = np.random.default_rng([config.seed, 1])
    scale, correlation = config.depths.draw(count, rng)
    return noisy_copies(val_models[:count], noise, scale, correlation, seed=config.seed + 1), None, val_labels[:count]


def batch_maker(config: ProductionConfig, models: np.ndarray, targets: np.ndarray, labels, noise: NoiseModel):
    """``make_batch(step)``: training batch ``step`` of the recipe (crowded scenes or isolated noisy copies)."""
    from legato.training.noisy_batches import noisy_batch
    from legato.training.scenes import scene_batch

    if config.scenes is not None or config.psf_input:
        library = scene_library(models, targets, labels, config)
        members = library.members()

        def make_batch(step):
            return scene_batch(library, config.scenes or ISOLATED, noise, config.depths, config.batch_size, config.seed, step, members)

        return make_batch

    def make_batch(step):
        return noisy_batch(models, targets, noise, config.depths, config.batch_size, config.seed, step)

    return make_batch


ISOLATED = SceneModel(neighbour_probability=0.0, sky_offset_sigma=0.0, sky_gradient_sigma=0.0, bright_flattening=0.0)


def scene_library(models: np.ndarray, targets: np.ndarray, labels, config: ProductionConfig):
    """The :class:`~legato.training.scenes.SceneLibrary` of a noiseless split under ``config``.

    Raises
    ------
    ConfigError
        When ``psf_input`` is asked of a set without per-galaxy PSF columns.
    """
    from legato.models.noise_aware import psf_features
    from legato.training.scenes import SceneLibrary

    extra = None
    if config.psf_input:
        missing = [c for c in ("psf_fwhm_arcsec", "psf_r50_arcsec") if c not in labels.colnames]
        if missing:
            raise ConfigError(
                f"psf_input needs a multi-band noiseless set with {', '.join(missing)} (legato simulate --noiseless with simulate_bands)"
            )
        extra = psf_features(labels["psf_fwhm_arcsec"], labels["psf_r50_arcsec"])
    bands = np.asarray(labels["band_index"]) if "band_index" in labels.colnames else np.zeros(len(models), dtype=int)
    weights = (config.scenes or ISOLATED).target_weights(np.asarray(labels["mag"], float))
    return SceneLibrary(models=models, targets=targets, band_index=bands, weights=weights, extra=extra)


def noiseless_set_noise(header, data_dir) -> NoiseModel:
    """The calibrated noise model recorded in a noiseless set's header (``NOMSKY``, ``EXPTIME``)."""
    if "NOMSKY" not in header:
        raise ConfigError(f"{data_dir} is not a noiseless set (no NOMSKY keyword): make it with legato simulate --noiseless")
    return NoiseModel(sky_sigma=float(header["NOMSKY"]), exposure_time=float(header["EXPTIME"]))


def resume_or_start_run(run_id: str | None):
    """The MLflow run ``run_id`` continued, or a new ``production`` run when this store does not have it."""
    import mlflow

    if run_id:
        try:
            return mlflow.start_run(run_id=run_id)
        except Exception:  # noqa: BLE001 - a checkpoint moved to another tracking store starts a new run
            pass
    return mlflow.start_run(run_name="production")
