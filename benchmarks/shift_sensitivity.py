"""Benchmark: sensitivity of the Great Expectations suites to domain shift and corruption.

Runs the stamp-integrity suite and the domain-shift suite (expectations/, built
from the simulated training set by `legato build-reference`) on
- 20 independent clean simulated batches of 1,000 stamps (a fresh seed): false alarms;
- clean batches with a known corruption: NaN pixels, zeropoint off by 1 mag,
  pixel scale x2, PSF twice as wide, noise x2, a background offset, off-centre
  sources: detected or not;
- the real CANDELS UDS GALFIT example blocks (cut or padded to 64 x 64);
and writes reports/shift.json.

    python benchmarks/shift_sensitivity.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from legato.config import load_params
from legato.conventions import ZEROPOINT_AB
from legato.io.stamps import read_stamp_set
from legato.simulation.settings import simulation_config
from legato.validation.gx import Validator, load_suite
from legato.validation.shift import SHIFT_STATISTICS, shift_table
from legato.validation.summary import stamp_summary
from legato.validation.validate import scaled_shift_suite


def simulate_batch(config, folder: Path, size: int, seed: int) -> tuple[np.ndarray, float]:
    """``size`` fresh test stamps (float64) and the sky sigma."""
    from legato.simulation.simulate import simulate

    simulate(replace(config, sizes={"train": 0, "val": 0, "test": size}, seed=seed), folder, progress=False)
    stamps, _, header = read_stamp_set(folder / "test")
    return stamps.astype(np.float64), float(header["SKYSIG"])


def wide_psf(source: str, out: Path, factor: float = 2.0) -> Path:
    """A copy of the PSF image dilated by ``factor`` (same sampling, no pixel response)."""
    import galsim
    from astropy.io import fits

    with fits.open(source) as hdul:
        header, array = hdul[0].header.copy(), hdul[0].data.astype(np.float64)
    profile = galsim.InterpolatedImage(galsim.Image(array, scale=header["PIXSCALE"])).dilate(factor)
    image = profile.drawImage(nx=array.shape[1], ny=array.shape[0], scale=header["PIXSCALE"], method="no_pixel").array
    header["PSFID"] = f"{header.get('PSFID', 'psf')}-x{factor:g}"
    fits.PrimaryHDU((image / image.sum()).astype(np.float32), header=header).writeto(out, overwrite=True)
    return out


def coarser_pixels(stamps: np.ndarray, sky_sigma: float, rng) -> np.ndarray:
    """The same sky seen with pixels twice as large: 2x2 block sums (flux kept, sky noise 2 sigma) on a 64 x 64 stamp."""
    n, h, w = stamps.shape
    binned = stamps.reshape(n, h // 2, 2, w // 2, 2).sum(axis=(2, 4))
    out = rng.normal(0.0, 2 * sky_sigma, stamps.shape)
    out[:, h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = binned
    return out


def uds_blocks(folder: Path, size: int, rng) -> np.ndarray:
    """The real UDS GALFIT blocks as `legato ingest galfit` cuts them (centred on the target, sky subtracted, noise-padded)."""
    from legato.ingest.real_sets import galfit_stamp

    return np.stack([galfit_stamp(path, size, rng)[0] for path in sorted(folder.glob("H.gf*.fits"))])


def judge(validator, stamps, zeropoint, integrity, shift, stamp_size, name) -> dict:
    """Integrity and shift verdicts on one batch, with the statistics that moved."""
    import pandas as pd

    summary = stamp_summary(stamps, zeropoint)
    frame = pd.DataFrame(summary)
    integrity["name"] = f"integrity_{name}"
    checked = validator.run(frame, integrity, {"stamp_size": stamp_size})
    suite = scaled_shift_suite(shift, len(frame))
    suite = {**suite, "name": f"shift_{name}"}
    shifted = validator.run(frame[list(SHIFT_STATISTICS)], suite)
    moved = [row["statistic"] for row in shift_table(shift, shifted.expectations, summary) if row["failed"]]
    return {
        "n": len(frame),
        "integrity_failed": not checked.success,
        "integrity_failures": sorted({f.column or f.type for f in checked.failures}),
        "shift_flagged": not shifted.success,
        "statistics_moved": moved,
        "detected": (not checked.success) or (not shifted.success),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--expectations", type=Path, default=Path("expectations"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--uds", type=Path, default=Path("data/candels_uds_galfit_blocks"))
    parser.add_argument(
        "--realistic", type=Path, default=Path("datasets/realistic/raw/A"), help="realistic test A (dvc repro simulate_realistic)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/shift.json"))
    args = parser.parse_args()

    start = time.perf_counter()
    config = simulation_config(load_params(args.params))
    integrity = load_suite(args.expectations / "stamp_integrity.json")
    shift = load_suite(args.expectations / "domain_shift.json")
    zp, size = ZEROPOINT_AB[config.band], config.stamp_size
    validator = Validator()
    rng = np.random.default_rng(2024)
    report = {
        "batch_size": args.batch_size,
        "reference": shift["meta"].get("reference_set"),
        "reference_batch_size": shift["meta"]["batch_size"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean, sky = simulate_batch(config, tmp / "clean", args.batches * args.batch_size + args.batch_size, seed=99_001)
        batches = [clean[k * args.batch_size : (k + 1) * args.batch_size] for k in range(args.batches)]
        verdicts = [judge(validator, b, zp, integrity, shift, size, f"clean{k}") for k, b in enumerate(batches)]
        report["clean"] = {
            "batches": len(verdicts),
            "false_alarms": sum(v["detected"] for v in verdicts),
            "false_alarm_rate": sum(v["detected"] for v in verdicts) / len(verdicts),
            "flagged_statistics": sorted({s for v in verdicts for s in v["statistics_moved"]}),
        }
        base = clean[args.batches * args.batch_size :]
        nan = base.copy()
        for k in rng.choice(len(nan), size=len(nan) // 20, replace=False):
            nan[k, 20:23, 20:23] = np.nan
        psf_folder = tmp / "psf"
        psf_folder.mkdir()
        wide, _ = simulate_batch(
            replace(config, psf=str(wide_psf(config.psf, psf_folder / "wide.fits"))), tmp / "wide", args.batch_size, seed=99_002
        )
        off, _ = simulate_batch(replace(config, space=replace(config.space, max_offset_pix=6.0)), tmp / "off", args.batch_size, seed=99_003)
        corruptions = {
            "nan_pixels (5% of stamps, 3x3 patch)": nan,
            "zeropoint off by 1 mag (fluxes x2.51)": base * 10**0.4,
            "pixel scale x2 (2x2 block sums)": coarser_pixels(base, sky, rng),
            "psf twice as wide": wide,
            "noise x2": base + rng.normal(0.0, np.sqrt(3.0) * sky, base.shape),
            "background offset (+0.5 sky sigma)": base + 0.5 * sky,
            "off-centre (offsets up to 6 px)": off,
        }
        report["corruptions"] = {
            name: judge(validator, stamps, zp, integrity, shift, size, f"c{k}") for k, (name, stamps) in enumerate(corruptions.items())
        }
    if args.uds.is_dir():
        report["real_uds"] = {
            "source": str(args.uds),
            **judge(validator, uds_blocks(args.uds, size, rng), zp, integrity, shift, size, "uds"),
        }
    report["realistic_domain"] = None
    if args.realistic.is_dir():
        from legato.io.stamps import read_stamp_set

        stamps = read_stamp_set(args.realistic)[0][: args.batch_size]
        report["realistic_domain"] = {"source": str(args.realistic), **judge(validator, stamps, zp, integrity, shift, size, "realistic")}
    report["all_corruptions_detected"] = all(v["detected"] for v in report["corruptions"].values())
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    report["targets"] = {"false_alarms": 0, "every_corruption_detected": True, "real_and_realistic_flagged": True}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
