"""Benchmark: does the scene network gain from seeing the neighbour mask as an input channel?

Issue 27, item 2, names three ways for the network to see what the classical fitter
sees: a segmentation or neighbour-mask channel, a deblended input, or no explicit
mask. ``benchmarks/deblend_input.py`` measured the deblended input and no mask on
the published networks. A mask channel needs training; this benchmark trains it
at a fine-tuning budget, against a control trained the same way without it:

- both arms start from the published every-band scene network (``models/scenes``,
  150,000 steps) and train ``--steps`` more steps on new scene batches of the same
  recipe (``params.yaml`` ``scenes``), Adam with a cosine decay from ``--learning-rate``;
- ``control``: the network as it is;
- ``mask``: a third input channel, the blend detector's neighbour map of the noisy
  stamp (:func:`legato.io.stamp_checks.blend_measurements` with ``with_map``,
  :func:`legato.io.deblend.neighbour_pixels`; the same map ``legato predict`` measures),
  its first-layer weights started at zero, so step 0 is the published network.

Each arm is scored with its raw network outputs (no refinement stage, no interval
calibration) beside the published network's: the realistic test A and pool B
against the truth (Sérsic galaxies, H < 23, isolated and with neighbours) and
against the classical labels (stamps with neighbours), and Table 1 (H <= 23) on
the isolated simulated test set. Checkpoints are kept under ``--work`` so a
stopped run continues. Writes reports/mask_channel.json.

    python benchmarks/mask_channel.py --steps 8000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARMS = ("control", "mask")
BASE = REPO / "models/scenes"
#: the layers after the first convolution, in order (the production network's names)
TRUNK = ("block1_conv2", "block1_pool", *(f"unit{u}_{k}" for u in (1, 2, 3) for k in ("conv1", "conv2", "pool")))


def with_mask_channel(base):
    """``base`` (a PSF-conditioned production network) with the neighbour map as a third input channel.

    The new first convolution holds the base's weights for the two existing channels and
    zeros for the mask, so the network starts as the base; every other layer is the base's.

    Parameters
    ----------
    base : keras.Model
        Inputs ``[stamp, psf]``, output ``(N, 9)`` (:func:`legato.models.noise_aware.build_production`).

    Returns
    -------
    keras.Model
        Inputs ``[stamp, psf, neighbours]`` (neighbours: ``(N, H, W)`` float, 1 on mapped pixels).
    """
    import keras
    from keras import layers

    size = int(base.inputs[0].shape[1])
    stamp = keras.Input(shape=(size, size), name="stamp")
    psf = keras.Input(shape=(int(base.inputs[1].shape[1]),), name="psf")
    neighbours = keras.Input(shape=(size, size), name="neighbours")
    sigma = base.get_layer("border_noise")(stamp)
    log_ratio = base.get_layer("noise_log_ratio")(sigma)
    x = base.get_layer("noise_scaled_input")(stamp, sigma)
    x = layers.Concatenate(name="with_neighbours")([x, layers.Reshape((size, size, 1), name="neighbour_channel")(neighbours)])
    first = base.get_layer("block1_conv1")
    conv = layers.Conv2D(first.filters, 3, padding="same", activation="relu", name="block1_conv1_masked")
    x = conv(x)
    kernel, bias = first.get_weights()
    conv.set_weights([np.concatenate([kernel, np.zeros_like(kernel[:, :, :1])], axis=2), bias])
    for name in TRUNK:
        x = base.get_layer(name)(x)
    conditions = [log_ratio, psf]
    features = base.get_layer("features")([base.get_layer("flatten")(x), *conditions])
    h = base.get_layer("dense2")(base.get_layer("dense1")(features))
    mean = base.get_layer("estimate")(base.get_layer("head_input")([h, *conditions]))
    frozen = base.get_layer("stop_gradient")(base.get_layer("uncertainty_input")([features, mean]))
    log_variance = base.get_layer("log_variance")(base.get_layer("uncertainty1")(frozen))
    outputs = base.get_layer("outputs")([mean, log_variance, log_ratio])
    return keras.Model([stamp, psf, neighbours], outputs, name="production_masked")


def neighbour_masks(stamps: np.ndarray) -> np.ndarray:
    """The blend detector's neighbour pixels of each stamp as a float32 ``(N, H, W)`` channel."""
    from legato.io.deblend import neighbour_pixels
    from legato.io.stamp_checks import blend_measurements

    _, _, neighbour_map = blend_measurements(stamps, with_map=True)
    return neighbour_pixels(neighbour_map, stamps.shape[-1], 0).astype(np.float32)


def inputs_for(arm: str, stamps: np.ndarray, psf: np.ndarray) -> list:
    """The network inputs of ``arm`` for ``stamps`` with PSF features ``psf``."""
    return [stamps, psf] + ([neighbour_masks(stamps)] if arm == "mask" else [])


def arm_model(arm: str, checkpoint: Path, steps: int, learning_rate: float):
    """The arm's network: its checkpoint when there is one, else the published network (with the mask channel for ``mask``)."""
    import keras

    import legato.models.noise_aware  # noqa: F401  (registers the custom layers and loss)
    from legato.models.noise_aware import mean_and_variance_loss

    if checkpoint.is_file():
        return keras.saving.load_model(checkpoint, compile=True)
    base = keras.saving.load_model(BASE / "network.keras", compile=False)
    model = with_mask_channel(base) if arm == "mask" else base
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=mean_and_variance_loss, jit_compile=False)
    return model


def fine_tune(arm: str, work: Path, steps: int, learning_rate: float, checkpoint_every: int = 1000, log=print) -> dict:
    """Train ``arm`` up to ``steps`` fine-tuning steps on new scene batches, resuming from its checkpoint."""
    from legato.config import load_params
    from legato.models.targets import TargetScaler
    from legato.training.noise_aware import ProductionConfig, batch_maker, noiseless_set_noise, training_sets

    folder = work / arm
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, state_path = folder / "network.keras", folder / "state.json"
    state = (
        json.loads(state_path.read_text()) if state_path.is_file() and checkpoint.is_file() else {"step": 0, "seconds": 0.0, "losses": []}
    )
    if state["step"] >= steps:
        return state
    config = ProductionConfig.from_params(load_params(REPO / "params.yaml"), section="scenes")
    (models, labels), _, header = training_sets(REPO / "datasets/bands")
    scaler = TargetScaler.from_json(BASE / "network_scaler.json")
    make_batch = batch_maker(config, models, scaler.transform(labels), labels, noiseless_set_noise(header, REPO / "datasets/bands"))
    model = arm_model(arm, checkpoint, steps, learning_rate)
    began, losses = time.perf_counter(), []
    for step in range(state["step"], steps):
        stamps, targets, psf = make_batch(config.steps + step)  # batches the published training never drew
        losses.append(float(model.train_on_batch(inputs_for(arm, stamps, psf), targets)))
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            partial = folder / ".network.partial.keras"
            model.save(partial)
            partial.replace(checkpoint)
            state = {
                "step": step + 1,
                "seconds": round(state["seconds"] + time.perf_counter() - began, 1),
                "losses": state["losses"] + [round(float(np.mean(losses)), 5)],
            }
            state_path.write_text(json.dumps(state))
            began, losses = time.perf_counter(), []
            log(f"{arm}: step {step + 1}/{steps}, loss {state['losses'][-1]}", flush=True)
    return state


def raw_columns(model, arm: str, stamps: np.ndarray, estimator) -> dict[str, np.ndarray]:
    """Physical means (``mag, re_arcsec, n, ellipticity``) of a network's raw outputs on F160W stamps."""
    from legato.models.noise_aware import forward_in_batches
    from legato.models.targets import physical_columns

    scaler = estimator.members[0][1]
    psf = estimator.psf_condition()
    features = psf.features(len(stamps))
    batch = inputs_for(arm, stamps, features)
    outputs = (
        np.concatenate([model([part[i : i + 512] for part in batch], training=False).numpy() for i in range(0, len(stamps), 512)])
        if arm == "mask"
        else forward_in_batches(model, stamps, psf=features)
    )
    values = scaler.inverse(outputs[:, : len(scaler.targets)])
    values["mag"] = values["mag"] + psf.magnitude_offset
    return physical_columns(values)


def score(columns: dict, stamps_labels) -> dict:
    """R² against the truth (Sérsic, H < 23, isolated / with neighbours) and the labels (with neighbours) of a realistic set."""
    from legato.evaluation.truth import score_test_a

    report = score_test_a(stamps_labels, {"network": columns})
    return {
        "truth_sersic_isolated_h23": report["against_truth"]["network"]["sersic_isolated_h23"]["r2"],
        "truth_sersic_with_neighbours_h23": report["against_truth"]["network"]["sersic_with_neighbours_h23"]["r2"],
        "labels_with_neighbours": report["against_labels"]["network"]["with_neighbours"]["r2"],
    }


def evaluate(arms: dict) -> dict:
    """Every arm (and the published network) on test A, pool B and Table 1."""
    import keras

    import legato.models.noise_aware  # noqa: F401
    from legato.io.stamps import read_stamp_set
    from legato.models.estimator import LoadedEstimator
    from legato.stats import r2_score

    estimator = LoadedEstimator(BASE)
    networks = {"published": ("control", keras.saving.load_model(BASE / "network.keras", compile=False))}
    networks.update({arm: (arm, keras.saving.load_model(path, compile=False)) for arm, path in arms.items()})
    sets = {"test_a": "datasets/realistic/labelled/A", "pool_b": "datasets/realistic/labelled/B"}
    loaded = {key: read_stamp_set(REPO / path) for key, path in sets.items()}
    sim_stamps, sim_labels, _ = read_stamp_set(REPO / "datasets/simulated/test")
    bright = np.asarray(sim_labels["mag"]) <= 23.0
    out: dict = {}
    for name, (arm, model) in networks.items():
        out[name] = {key: score(raw_columns(model, arm, stamps, estimator), labels) for key, (stamps, labels, _) in loaded.items()}
        sim = raw_columns(model, arm, sim_stamps, estimator)
        out[name]["table1_h23"] = {
            p: round(float(r2_score(np.asarray(sim_labels[c])[bright], np.asarray(sim[c])[bright])), 5)
            for p, c in (("mag", "mag"), ("re", "re_arcsec"), ("n", "n"), ("ellipticity", "ellipticity"))
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000, help="fine-tuning steps per arm")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--arm", choices=ARMS, action="append", default=None, help="train only these arms (default: both)")
    parser.add_argument("--work", type=Path, default=REPO / "work/mask_channel", help="checkpoints (resumable)")
    parser.add_argument("--out", type=Path, default=REPO / "reports/mask_channel.json")
    args = parser.parse_args()

    states = {arm: fine_tune(arm, args.work, args.steps, args.learning_rate) for arm in args.arm or ARMS}
    if any(state["step"] < args.steps for state in states.values()):
        return
    results = evaluate({arm: args.work / arm / "network.keras" for arm in states})
    report = {
        "base": str(BASE.relative_to(REPO)),
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "training": {arm: {"seconds": s["seconds"], "loss_per_1000_steps": s["losses"]} for arm, s in states.items()},
        "scores": results,
        "note": "raw network means (no refinement stage); truth: Sérsic galaxies of the realistic sets, gen_* columns",
        "command": f"python benchmarks/mask_channel.py --steps {args.steps}"
        + ("" if args.learning_rate == 2e-4 else f" --learning-rate {args.learning_rate}"),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
