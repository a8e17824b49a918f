"""The ``crb`` stage: Cramér-Rao bounds of every galaxy of a simulated stamp set, as a FITS table."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from legato.errors import DataError
from legato.io.stamps import chunk_paths, read_labels
from legato.modelling.bounds import (
    BOUND_UNITS,
    FLAG_NAMES,
    NAN_BOUNDS,
    FiniteSteps,
    StampModel,
    fisher_point,
    galaxy_bound,
)

TRUTH_COLUMNS = ("mag", "re_arcsec", "n", "ellipticity", "pa_deg", "x_offset_pix", "y_offset_pix")

_WORKER: dict = {}


def _init_worker(psf_path: str, settings: dict) -> None:
    from legato.modelling.renderer import ModelRenderer
    from legato.simulation.psf import read_psf_image

    psf = read_psf_image(psf_path, expected_pixel_scale=settings["pixel_scale"]).galsim_profile()
    renderer = ModelRenderer(psf, settings["size"], settings["pixel_scale"], settings["zeropoint"])
    _WORKER["models"] = {
        factor: StampModel(renderer, settings["sky_sigma"], settings["exposure_time"], FiniteSteps().scaled(factor))
        for factor in (1.0, 2.0)
    }


def _bounds_task(task: tuple[float, np.ndarray]) -> list[tuple[dict, int]]:
    factor, points = task
    stamp_model = _WORKER["models"][factor]
    return [galaxy_bound(theta, stamp_model) for theta in points]


def stamp_set_noise(set_dir: str | Path) -> dict:
    """Rendering and noise settings of a simulated stamp set, from its first chunk's header.

    Returns
    -------
    dict
        ``size``, ``pixel_scale`` (arcsec), ``zeropoint`` (AB), ``sky_sigma``
        (electrons/s/pixel) and ``exposure_time`` (s).

    Raises
    ------
    DataError
        If the set has no chunk, or its header lacks the noise keywords (a set made
        without noise, or not by ``legato simulate``).
    """
    paths = chunk_paths(set_dir)
    header = fits.getheader(paths[0])
    missing = [key for key in ("NAXIS1", "PIXSCALE", "MAGZPT", "SKYSIG", "EXPTIME") if key not in header]
    if missing:
        raise DataError(f"{paths[0]} lacks {', '.join(missing)}: the bound needs the stamp set's noise model")
    if not float(header["SKYSIG"]) > 0:
        raise DataError(f"{paths[0]} has SKYSIG={header['SKYSIG']}: a noiseless set has no Cramér-Rao bound")
    return {
        "size": int(header["NAXIS1"]),
        "pixel_scale": float(header["PIXSCALE"]),
        "zeropoint": float(header["MAGZPT"]),
        "sky_sigma": float(header["SKYSIG"]),
        "exposure_time": float(header["EXPTIME"]),
    }


def _parallel_bounds(points: np.ndarray, factor: float, psf_path: Path, settings: dict, workers: int) -> list[tuple[dict, int]]:
    """Bounds of every Fisher point, ``workers`` processes, in Sérsic-index order (GalSim table reuse)."""
    order = np.argsort(points[:, 2], kind="stable")
    chunks = [order[k : k + 50] for k in range(0, len(order), 50)]
    results: list = [None] * len(points)
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(str(psf_path), settings)) as pool:
        for rows, bounds in zip(chunks, pool.map(_bounds_task, [(factor, points[rows]) for rows in chunks])):
            for row, bound in zip(rows, bounds):
                results[row] = bound
    return results


def crb_catalogue(
    set_dir: str | Path,
    psf_path: str | Path,
    out: str | Path,
    workers: int = 2,
    convergence_galaxies: int = 200,
) -> dict:
    """Compute the Cramér-Rao bound of every galaxy of a stamp set at its true parameters.

    Parameters
    ----------
    set_dir : str or Path
        Simulated stamp set (labels with the true parameters; header with the noise model).
    psf_path : str or Path
        The PSF image the set was rendered with.
    out : str or Path
        FITS table written: ``id``, the bounds (standard deviations: ``crb_mag`` in mag,
        ``crb_re_arcsec`` in arcsec, ``crb_n``, ``crb_ellipticity``, ``crb_ln_re``,
        ``crb_ln_n``) and ``crb_flags`` (0 = valid; otherwise NaN bounds). Written whole
        or not at all.
    workers : int
        Processes.
    convergence_galaxies : int
        The first galaxies whose bounds are recomputed with doubled finite-difference
        steps (the step-convergence check in the summary).

    Returns
    -------
    dict
        Summary: galaxies, flagged counts per reason, seconds, the step convergence
        (median and maximum relative change of each bound) and the settings used.
    """
    start = time.perf_counter()
    truth = read_labels(set_dir)
    missing = [c for c in TRUTH_COLUMNS if c not in truth.colnames]
    if missing:
        raise DataError(f"{set_dir} labels lack {', '.join(missing)}: the bound is computed at the true parameters")
    settings = stamp_set_noise(set_dir)
    points = np.array([fisher_point(*(float(row[c]) for c in TRUTH_COLUMNS)) for row in truth])
    workers = max(1, min(int(workers), os.cpu_count() or 1))
    results = _parallel_bounds(points, 1.0, Path(psf_path), settings, workers)
    table = Table({"id": np.asarray(truth["id"])})
    for column in NAN_BOUNDS:
        table[column] = np.array([bounds[column] for bounds, _ in results])
        if column in BOUND_UNITS:
            table[column].unit = BOUND_UNITS[column]
    table["crb_flags"] = np.array([flag for _, flag in results], dtype=np.int16)
    seconds = time.perf_counter() - start

    check = min(int(convergence_galaxies), len(points))
    doubled = _parallel_bounds(points[:check], 2.0, Path(psf_path), settings, workers)
    convergence = {}
    for column in ("crb_mag", "crb_re_arcsec", "crb_n", "crb_ellipticity"):
        base = np.asarray(table[column][:check], dtype=float)
        change = np.abs(np.array([bounds[column] for bounds, _ in doubled]) / base - 1.0)
        change = change[np.isfinite(change)]
        convergence[column] = {"median": float(np.median(change)), "max": float(np.max(change))} if change.size else None

    flags = np.asarray(table["crb_flags"])
    summary = {
        "galaxies": len(table),
        "valid": int(np.sum(flags == 0)),
        "flagged": {name: int(np.sum(flags & bit > 0)) for bit, name in FLAG_NAMES.items()},
        "seconds": round(seconds, 1),
        "workers": workers,
        "noise": {"sky_sigma": settings["sky_sigma"], "exposure_time": settings["exposure_time"]},
        "step_convergence": {"galaxies": check, "steps_doubled": True, "relative_change": convergence},
        "steps": asdict(FiniteSteps()),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.meta.update({"SKYSIG": settings["sky_sigma"], "EXPTIME": settings["exposure_time"], "SECONDS": summary["seconds"]})
    partial = out.with_name(out.name + ".partial")
    table.write(partial, format="fits", overwrite=True)
    partial.replace(out)
    return summary
