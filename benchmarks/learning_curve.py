"""Benchmark: the production network's learning curve on this CPU (R² against optimizer steps and wall time).

Two curves from one training (``legato train-production``):

- the validation R² at random training depths, written every ``checkpoint_every``
  steps by the training itself (``checkpoints/production/state.json``);
- the Table 1 test set (the simulator's own noise, calibrated depth) scored at
  every kept snapshot (``checkpoints/production/snapshots/``, every 5,000 steps)
  and at the final network, at H <= 23 and H <= 24.5.

The learning rate follows a cosine decay over the whole run, so the curve
shows this schedule, not a constant-rate one: the gain per step late in the
run says whether more steps would still pay. Writes reports/learning_curve.json
and reports/figures/learning_curve.png.

    python benchmarks/learning_curve.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/production"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--out", type=Path, default=Path("reports/learning_curve.json"))
    parser.add_argument("--figure", type=Path, default=Path("reports/figures/learning_curve.png"))
    args = parser.parse_args()

    import keras

    import legato.models.noise_aware  # noqa: F401  (registers the layers)
    from legato.io.stamps import load_split
    from legato.models.noise_aware import N_TARGETS, forward_in_batches
    from legato.models.targets import TargetScaler, physical_columns
    from legato.stats import r2_table
    from legato.training.noise_aware import CHECKPOINT_MODEL, SNAPSHOTS, read_state

    state = read_state(args.checkpoint)
    if state is None:
        raise SystemExit(f"no production checkpoint in {args.checkpoint}")
    scaler = TargetScaler.from_json(args.checkpoint / "scaler.json")
    stamps, truth, _ = load_split(args.test)
    mag = np.asarray(truth["mag"], dtype=float)
    seconds_at = {h["step"]: h["seconds"] for h in state.history}
    networks = {int(p.stem.split("_")[1]): p for p in sorted((args.checkpoint / SNAPSHOTS).glob("step_*.keras"))}
    networks[state.step] = args.checkpoint / CHECKPOINT_MODEL
    test_curve = []
    for step, path in sorted(networks.items()):
        model = keras.saving.load_model(path, compile=False)
        outputs = forward_in_batches(model, stamps)
        values = physical_columns(scaler.inverse(outputs[:, :N_TARGETS]))
        row = {"step": step, "seconds": seconds_at.get(step)}
        for name, limit in (("paper_h23", 23.0), ("full_h245", 24.5)):
            keep = mag <= limit
            row[name] = {p: round(v, 5) for p, v in r2_table(truth[keep], {k: np.asarray(v)[keep] for k, v in values.items()}).items()}
        test_curve.append(row)
        print(json.dumps(row))
    report = {
        "recipe": state.config,
        "steps": state.step,
        "train_seconds": state.seconds,
        "validation_random_depths": state.history,
        "table1_test": test_curve,
        "note": "cosine learning-rate decay over the whole run; validation at random depths 0.2-2.5x, test at the calibrated depth",
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    figure(state.history, test_curve, args.figure)


def figure(history: list, test_curve: list, path: Path) -> None:
    """R² against optimizer steps: validation (random depths) and Table 1 test set (H <= 23)."""
    import matplotlib.pyplot as plt

    from legato.columns import PARAMETERS
    from legato.figures import save_figure

    fig, axes = plt.subplots(1, len(PARAMETERS), figsize=(4 * len(PARAMETERS), 3.6))
    for ax, p in zip(axes, PARAMETERS):
        ax.plot([h["step"] for h in history], [h.get(f"val_r2_{p}") for h in history], lw=1, label="validation, random depths")
        ax.plot([r["step"] for r in test_curve], [r["paper_h23"][p] for r in test_curve], "o-", lw=1.2, label="test, H <= 23")
        ax.set_title(p)
        ax.set_xlabel("optimizer steps (64 stamps)")
        lowest = min([r["paper_h23"][p] for r in test_curve] + [h.get(f"val_r2_{p}", 1.0) for h in history[len(history) // 4 :]])
        ax.set_ylim(max(0.7, lowest - 0.02), 1.0)
    axes[0].set_ylabel("R²")
    axes[-1].legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
