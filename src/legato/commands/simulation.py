"""Simulated stamp sets and the instrument: ``simulate``, ``calibrate-noise``, ``make-psf``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import ParamsOption, settled
from legato.reports import write_json, write_report_and_timing


def simulate(
    params: ParamsOption = Path("params.yaml"),
    domain: Annotated[str, typer.Option(help="sersic (train/val/test single-Sérsic sets) or realistic (test A and pool B).")] = "sersic",
    out: Annotated[
        Optional[Path],
        typer.Option(help="Output folder, one sub-folder per split (default: datasets/simulated or datasets/realistic/raw)."),
    ] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    mag_min: Annotated[Optional[float], typer.Option(help="Brightest AB magnitude drawn.")] = None,
    mag_max: Annotated[Optional[float], typer.Option(help="Faintest AB magnitude drawn (23 = paper subset).")] = None,
    train: Annotated[Optional[int], typer.Option(help="Training galaxies.")] = None,
    val: Annotated[Optional[int], typer.Option(help="Validation galaxies.")] = None,
    test: Annotated[Optional[int], typer.Option(help="Test galaxies.")] = None,
    size_a: Annotated[Optional[int], typer.Option(help="Realistic domain: galaxies in test A.")] = None,
    size_b: Annotated[Optional[int], typer.Option(help="Realistic domain: galaxies in pool B.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    band: Annotated[Optional[str], typer.Option(help="Filter (sets the zeropoint).")] = None,
    stamp_size: Annotated[Optional[int], typer.Option(help="Stamp side in pixels.")] = None,
    noiseless: Annotated[
        bool, typer.Option(help="Single-Sérsic: store noiseless models (noise drawn at training time, legato train-production).")
    ] = False,
    bands: Annotated[
        bool,
        typer.Option(
            help=(
                "Single-Sérsic: draw every galaxy in one of the bands of params.yaml's bands section (its PSF, zeropoint, "
                "prior; PSF jitter), with that section's sizes and seed."
            )
        ),
    ] = False,
    report: Annotated[
        Optional[Path], typer.Option(help="Write a JSON summary here (its timing goes to reports/timing/, untracked).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Simulate CANDELS F160W-like stamps: single-Sérsic train / val / test, or the realistic test A / pool B."""
    from legato.config import load_params
    from legato.errors import ConfigError
    from legato.simulation.settings import simulation_config

    loaded = load_params(params)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if domain == "realistic":
        from legato.simulation.realistic import realistic_config, simulate_realistic

        sizes = dict(loaded.get("realistic", {}).get("sizes") or {})
        sizes.update({k: v for k, v in (("A", size_a), ("B", size_b)) if v is not None})
        config = realistic_config(loaded, {"sizes": sizes, "seed": seed})
        out = out or Path("datasets/realistic/raw")
        from legato.simulation.realistic import CODE, split_recipes

        summary = simulate_realistic(config, out, workers=workers, progress=progress)
        typer.echo(
            f"wrote realistic test A and pool B {summary['stamps']} to {out} in {summary['wall_seconds']} s; kinds {summary['kinds']}"
        )
        write_report_and_timing(report, settled(out, split_recipes(config), CODE, report, summary))
        return
    if domain != "sersic":
        raise ConfigError(f"unknown domain {domain!r}; choose sersic or realistic")
    out = out or Path("datasets/simulated")
    sizes = dict(loaded.get("simulate", {}).get("sizes") or {})
    for split, value in (("train", train), ("val", val), ("test", test)):
        if value is not None:
            if value < 0:
                raise ConfigError(f"--{split} must be >= 0, got {value}")
            sizes[split] = value
    overrides = {"mag_min": mag_min, "mag_max": mag_max, "seed": seed, "band": band, "stamp_size": stamp_size}
    overrides["sizes"] = sizes or None
    if bands:
        from legato.simulation.settings import band_mixture

        mixture, band_sizes, band_seed = band_mixture(loaded)
        overrides["sizes"] = band_sizes | {
            split: value for split, value in (("train", train), ("val", val), ("test", test)) if value is not None
        }
        overrides["seed"] = seed if seed is not None else band_seed
    config = simulation_config(loaded, overrides)
    if noiseless:
        config = dataclasses.replace(config, noiseless=True)
    if bands:
        config = dataclasses.replace(config, bands=mixture)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")

    from legato.simulation.simulate import CODE, split_recipes
    from legato.simulation.simulate import simulate as run_simulation

    summary = run_simulation(config, out, workers=workers, progress=progress)
    typer.echo(
        f"wrote {summary['total_stamps']} stamps to {out} in {summary['wall_seconds']} s "
        f"({summary['stamps_per_second']} stamps/s, {summary['workers']} workers)"
    )
    write_report_and_timing(report, settled(out, split_recipes(config), CODE, report, summary))


def calibrate_noise(
    params: ParamsOption = Path("params.yaml"),
    sample: Annotated[int, typer.Option(help="Galaxies rendered for the fit.")] = 600,
    report: Annotated[Path, typer.Option(help="Where to write the calibration.")] = Path("reports/noise_calibration.json"),
):
    """Fit the sky noise and exposure time to the catalogue's S/N-versus-magnitude relation."""
    from legato.config import load_params
    from legato.errors import ConfigError
    from legato.simulation.calibration import calibrate_noise as fit
    from legato.simulation.settings import simulation_config

    if sample < 50:
        raise ConfigError(f"--sample must be at least 50, got {sample}")
    result = fit(simulation_config(load_params(params)), sample_size=sample)
    write_json(report, result)
    typer.echo(
        f"sky_sigma = {result['sky_sigma']} e-/s/pixel, exposure_time = {result['exposure_time']} s; "
        f"simulated/catalogue median S/N per bin: {result['ratio']} (written to {report})"
    )


def make_psf(
    band: Annotated[str, typer.Option(help="F606W, F814W (ACS/WFC), F105W, F125W, F140W or F160W (WFC3/IR).")] = "F160W",
    out: Annotated[Optional[Path], typer.Option(help="PSF FITS file to write (default: data/psf/<instrument>_<band>_psf.fits).")] = None,
    size: Annotated[int, typer.Option(help="Image side in pixels (odd).")] = 51,
):
    """Write a band's model PSF image (sampled at 0.06", no output-pixel response; docs/data.md)."""
    from legato.simulation.psf import band_optics, write_psf_image

    path = write_psf_image(out or Path("data/psf") / band_optics(band).file_name, size=size, band=band)
    typer.echo(f"wrote {path}")
