"""Benchmark: CNN stamps per second versus classical (Imfit) fits per second, measured in one run.

Both use every core of this machine: the networks predict the whole test set
in batches (TensorFlow's own threads), the fitter runs one process per core.
Writes reports/speed.json.

    python benchmarks/speed.py --test datasets/simulated/test --classical-stamps 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from legato.classical.fitter import FitSettings
from legato.classical.run import fit_stamp_set
from legato.config import load_params
from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
from legato.io.stamps import read_stamp_set
from legato.evaluation.evaluate import predict_with_estimators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--model", action="append", default=None, help="name=estimator folder (default: arch1, arch2 from params)")
    parser.add_argument("--classical-stamps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("reports/speed.json"))
    args = parser.parse_args()

    params = load_params(args.params)
    models = dict(m.split("=", 1) for m in args.model) if args.model else params["evaluate"]["estimators"]
    stamps, labels, _ = read_stamp_set(args.test)
    workers = os.cpu_count() or 1
    _, rates = predict_with_estimators(stamps, labels["id"], {name: Path(folder) for name, folder in models.items()})
    cnn = {name: round(rate, 1) for name, rate in rates.items()}
    settings = FitSettings.from_params(params.get("classical", {}), PIXEL_SCALE_ARCSEC, ZEROPOINT_AB["F160W"])
    with tempfile.TemporaryDirectory() as tmp:
        block = max(1, args.classical_stamps // (4 * workers))
        summary = fit_stamp_set(
            args.test, Path(tmp) / "fits.fits", params["classical"]["psf"], settings, workers=workers,
            block_size=block, max_stamps=args.classical_stamps, progress=False,
        )
    classical = summary["fits_per_second"]
    results = {
        "machine": {"cores": workers, "processor": platform.processor() or platform.machine()},
        "cnn_stamps": len(stamps),
        "cnn_stamps_per_second": cnn,
        "classical_stamps": summary["fitted"],
        "classical_fits_per_second": classical,
        "classical_median_seconds_per_fit": round(summary["median_fit_seconds"], 3),
        "speedup_cnn_over_classical": {name: round(rate / classical, 1) for name, rate in cnn.items()},
        "paper_speedup": 50,
        "target_speedup": 500,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
