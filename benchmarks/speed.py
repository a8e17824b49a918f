"""Benchmark: CNN stamps per second versus classical (Imfit) fits per second, measured in one run.

Both use every core of this machine: the networks predict the whole test set
in batches (TensorFlow's own threads), the fitter runs one process per core.
With ``--end-to-end N`` it also runs the real ``legato predict`` on a FITS cube
of N stamps (the test set under its 8 flips/rotations) for the production
estimator (uncertainties and input checks included) and for Arch1, and times a
single stamp in process; with ``--residuals`` also the production estimator with
``legato predict --residuals`` (model, reduced chi², residual flux fraction and
asymmetry of every stamp) on the same cube; with ``--repeats R`` every end-to-end
run R times, the models in turn, and the median reported with every run. Run it
on an idle machine. Writes reports/speed.json.

    python benchmarks/speed.py --test datasets/simulated/test --classical-stamps 400 --end-to-end 30000 --residuals
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from legato.classical.fitter import FitSettings
from legato.classical.run import fit_stamp_set
from legato.config import load_params
from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
from legato.evaluation.evaluate import predict_with_estimators
from legato.io.stamps import read_stamp_set
from legato.reports import machine_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--model", action="append", default=None, help="name=estimator folder (default: arch1, arch2 from params)")
    parser.add_argument("--classical-stamps", type=int, default=400)
    parser.add_argument("--end-to-end", type=int, default=0, help="stamps in the legato predict cube (0: skip)")
    parser.add_argument("--residuals", action="store_true", help="also time legato predict --residuals (production estimator)")
    parser.add_argument("--production", default="production", help="name of the production estimator among the models")
    parser.add_argument("--also", action="append", default=[], help="another model name to time end to end (repeatable)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="end-to-end runs per model, interleaved; the median is reported with every run"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/speed.json"))
    args = parser.parse_args()

    params = load_params(args.params)
    models = dict(m.split("=", 1) for m in args.model) if args.model else params["evaluate"]["estimators"]
    stamps, labels, header = read_stamp_set(args.test)
    workers = os.cpu_count() or 1
    _, rates = predict_with_estimators(stamps, labels["id"], {name: Path(folder) for name, folder in models.items()})
    cnn = {name: round(rate, 1) for name, rate in rates.items()}
    options = params.get("classical", {})
    settings = FitSettings.from_params(options, PIXEL_SCALE_ARCSEC, ZEROPOINT_AB["F160W"])
    # the classical fitter on its own (moments start: the GALFIT role), and started from the network's
    # estimates (the classical stage's default set-up, which needs the network first)
    summary = classical_rate(args, params, settings, workers, None)
    classical = summary["fits_per_second"]
    results = {
        "machine": machine_description(),
        "tensorflow_onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),  # legato sets 1 unless the caller chose
        "cnn_stamps": len(stamps),
        "cnn_stamps_per_second": cnn,
        "classical_stamps": summary["fitted"],
        "classical_fits_per_second": classical,
        "classical_median_seconds_per_fit": round(summary["median_fit_seconds"], 3),
        "speedup_cnn_over_classical": {name: round(rate / classical, 1) for name, rate in cnn.items()},
        "paper_speedup": 50,
        "target_speedup": 500,
    }
    if options.get("starts"):
        from legato.classical.starts import network_starts

        started = classical_rate(args, params, settings, workers, network_starts(options["starts"], args.test))
        results["classical_network_start_fits_per_second"] = started["fits_per_second"]
    if args.end_to_end and args.production in models:
        names = [name for name in dict.fromkeys((args.production, "arch1", *args.also)) if name in models]
        end_to_end = interleaved_rates({name: Path(models[name]) for name in names}, stamps, args.end_to_end, args.repeats)
        production = end_to_end[args.production]
        production["single_stamp_ms"] = single_stamp_latency(Path(models[args.production]), stamps)
        production["speedup_vs_classical"] = round(production["predict_end_to_end_stamps_per_s"] / classical, 1)
        results["production"] = production
        if args.residuals:
            options = [
                "--residuals",
                "--exposure-time",
                str(header["EXPTIME"]),
                "--psf",
                params["simulate"]["psf"],
                "--params",
                str(args.params),
            ]
            residuals = predict_command_rate(Path(models[args.production]), stamps, args.end_to_end, options)
            residuals["target_stamps_per_s"] = 300
            residuals["slowdown_vs_without"] = round(
                production["predict_end_to_end_stamps_per_s"] / residuals["predict_end_to_end_stamps_per_s"], 2
            )
            end_to_end[f"{args.production}_residuals"] = residuals
        results["end_to_end"] = end_to_end
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def classical_rate(args, params: dict, settings, workers: int, starts: dict | None) -> dict:
    """Fit the first ``--classical-stamps`` test stamps on every core (from ``starts`` when given); the fit summary."""
    with tempfile.TemporaryDirectory() as tmp:
        block = max(1, args.classical_stamps // (4 * workers))
        return fit_stamp_set(
            args.test,
            Path(tmp) / "fits.fits",
            params["classical"]["psf"],
            settings,
            workers=workers,
            block_size=block,
            max_stamps=args.classical_stamps,
            progress=False,
            starts=starts,
        )


def interleaved_rates(estimators: dict[str, Path], stamps: np.ndarray, count: int, repeats: int) -> dict[str, dict]:
    """:func:`predict_command_rate` of every estimator, ``repeats`` rounds in turn (a shared machine's speed drifts
    over minutes: interleaving gives every estimator the same conditions); the median run of each, with every rate."""
    runs = {name: [] for name in estimators}
    for _ in range(max(1, repeats)):
        for name, folder in estimators.items():
            runs[name].append(predict_command_rate(folder, stamps, count))
    results = {}
    for name, rates in runs.items():
        ordered = sorted(rates, key=lambda run: run["predict_end_to_end_stamps_per_s"])
        results[name] = dict(ordered[(len(ordered) - 1) // 2])
        if len(rates) > 1:
            results[name]["runs_stamps_per_s"] = [run["predict_end_to_end_stamps_per_s"] for run in rates]
    return results


def predict_command_rate(estimator: Path, stamps: np.ndarray, count: int, options: list[str] | None = None) -> dict:
    """Run ``legato predict`` (with ``options``) on a FITS cube of ``count`` stamps; its own rate and the whole process's."""
    import pyarrow.parquet as pq
    from astropy.io import fits

    from legato.symmetry import dihedral

    repeats = int(np.ceil(count / len(stamps)))
    cube = np.concatenate([dihedral(stamps, np.full(len(stamps), k % 8)) for k in range(repeats)])[:count]
    with tempfile.TemporaryDirectory() as tmp:
        path, out, report = Path(tmp) / "cube.fits", Path(tmp) / "catalogue.parquet", Path(tmp) / "report.json"
        fits.PrimaryHDU(cube.astype(np.float32)).writeto(path)
        command = [
            sys.executable,
            "-m",
            "legato",
            "predict",
            str(path),
            "-o",
            str(out),
            "--model",
            str(estimator),
            "--no-progress",
            "--report",
            str(report),
            *(options or []),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - start
        summary = json.loads(report.read_text())
        columns = pq.read_schema(out).names
    return {
        "stamps": count,
        "predict_end_to_end_stamps_per_s": summary["stamps_per_s"],
        "process_wall_seconds": round(wall, 2),
        "process_stamps_per_s": round(count / wall, 1),
        "columns": columns,
    }


def single_stamp_latency(estimator_dir: Path, stamps: np.ndarray, repeats: int = 200) -> float:
    """Median milliseconds of one in-process ``predict`` call on one stamp (after warm-up)."""
    from legato.models.estimator import LoadedEstimator

    estimator = LoadedEstimator(estimator_dir)
    for stamp in stamps[:5]:
        estimator.predict(stamp[None])
    times = []
    for stamp in stamps[:repeats]:
        start = time.perf_counter()
        estimator.predict(stamp[None])
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


if __name__ == "__main__":
    main()
