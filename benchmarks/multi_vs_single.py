"""Benchmark: one multi-output network versus one network per parameter (the paper's choice).

Trains Arch1 both ways on the same training subset and epochs, and writes the
validation R² per parameter and the training cost to reports/multi_vs_single.json.

    python benchmarks/multi_vs_single.py --data datasets/simulated --max-train 6000 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from legato.training.config import TrainConfig
from legato.training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("datasets/simulated"))
    parser.add_argument("--arch", default="arch1")
    parser.add_argument("--max-train", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports/multi_vs_single.json"))
    args = parser.parse_args()

    results = {"arch": args.arch, "max_train": args.max_train, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("multi_output", "per_parameter"):
            config = TrainConfig(arch=args.arch, mode=mode, epochs=args.epochs, max_train=args.max_train)
            summary = train(config, args.data, Path(tmp) / mode, tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="benchmark")
            results[mode] = {
                key: summary[key]
                for key in ("val_r2_mag", "val_r2_re", "val_r2_n", "val_r2_ellipticity", "train_seconds", "predict_stamps_per_second")
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
