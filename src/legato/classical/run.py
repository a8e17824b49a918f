"""Fitting a whole stamp set: parallel over the cores, chunked, resumable, tracked in MLflow."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from legato.analysis.morphometry import border_sigma
from legato.classical.fitter import FLAG_NAMES, FitSettings, fit_stamp, fitting_psf, noise_map
from legato.columns import OUTPUT_COLUMNS, SERSIC_COLUMNS
from legato.io.stamps import chunk_paths, iter_stamp_set
from legato.simulation.psf import read_psf_image

UNITS = {
    "mag": "mag",
    "re_arcsec": "arcsec",
    "mag_err": "mag",
    "re_arcsec_err": "arcsec",
    "pa_deg": "deg",
    "x_pix": "pix",
    "y_pix": "pix",
    "fit_seconds": "s",
}
_WORKER: dict = {}
NO_START = np.full(4, np.nan)  # a stamp without a network estimate starts from the moments


def _pin_to_core(cores) -> None:
    """Pin this worker to one core: Imfit's PSF convolver starts its own FFTW threads whatever
    ``maxThreads`` says, and unpinned workers then oversubscribe the cores (measured: 1.9 fits/s
    unpinned versus 3.2 fits/s pinned with 2 workers on 2 cores)."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cores.get(timeout=5)})
    except Exception:  # noqa: BLE001 - pinning is an optimisation, never a failure
        return


def _init_worker(psf_path: str, settings: FitSettings, cores=None) -> None:
    _pin_to_core(cores)
    psf = read_psf_image(psf_path, expected_pixel_scale=settings.pixel_scale).array
    _WORKER["psf"] = fitting_psf(psf, settings.psf_size)
    _WORKER["settings"] = settings


def _core_queue(context, workers: int):
    """One core id per worker (cycling through the usable cores), or None where affinity is unsupported."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    queue = context.Queue()
    for k in range(workers):
        queue.put(usable[k % len(usable)])
    return queue


def _fit_block(block: tuple) -> tuple[int, list[dict]]:
    index, ids, stamps, sky_sigma, exposure_time, starts = block
    rows = []
    for k, (stamp_id, stamp) in enumerate(zip(ids, stamps)):
        start = time.perf_counter()
        sigma = float(sky_sigma[k]) if sky_sigma is not None and np.isfinite(sky_sigma[k]) else border_sigma(stamp)
        start_estimate = None if starts is None else starts[k]
        result = fit_stamp(stamp, noise_map(stamp, sigma, exposure_time), _WORKER["psf"], _WORKER["settings"], start_estimate)
        result["id"] = int(stamp_id)
        result["fit_seconds"] = time.perf_counter() - start
        rows.append(result)
    return index, rows


def per_stamp_sky_sigma(labels, header) -> np.ndarray | None:
    """Per-pixel sky sigma of each stamp (electrons/s): the ``sky_sigma`` column, else the header's ``SKYSIG``, else None
    (measured on each border)."""
    if "sky_sigma" in labels.colnames:
        return np.asarray(labels["sky_sigma"], dtype=float)
    if header.get("SKYSIG"):
        return np.full(len(labels), float(header["SKYSIG"]))
    return None


def _blocks(set_dir: Path, block_size: int, max_stamps: int | None, starts: dict | None = None):
    """(block index, ids, stamps, sky sigma, exposure time, start estimates or None) in set order."""
    index, seen = 0, 0
    for stamps, labels, header in iter_stamp_set(set_dir):
        sky_sigma = per_stamp_sky_sigma(labels, header)
        exposure_time = header.get("EXPTIME")
        ids = np.asarray(labels["id"]) if "id" in labels.colnames else np.arange(seen, seen + len(stamps))
        for start in range(0, len(stamps), block_size):
            if max_stamps is not None and seen >= max_stamps:
                return
            stop = min(start + block_size, len(stamps))
            if max_stamps is not None:
                stop = min(stop, start + max_stamps - seen)
            block_starts = None if starts is None else np.array([starts.get(int(i), NO_START) for i in ids[start:stop]])
            yield (
                index,
                ids[start:stop],
                stamps[start:stop],
                None if sky_sigma is None else sky_sigma[start:stop],
                exposure_time,
                block_starts,
            )
            seen += stop - start
            index += 1


def run_fingerprint(set_dir: Path, psf_path: Path, settings: FitSettings, block_size: int, starts: dict | None = None) -> str:
    """A digest of everything that decides the fitted rows: finished parts are reused only when it matches."""
    files = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in chunk_paths(set_dir)]
    psf = Path(psf_path)
    description = {
        "settings": asdict(settings),
        "files": files,
        "psf": (psf.name, psf.stat().st_size, int(psf.stat().st_mtime)),
        "block_size": block_size,
    }
    if starts is not None:
        ordered = np.array([starts[k] for k in sorted(starts)])
        description["starts"] = hashlib.sha256(np.ascontiguousarray(ordered).tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _prepare_parts(parts: Path, fingerprint: str) -> None:
    """Create the parts folder, emptying it when it holds blocks of a different fit."""
    stamp = parts / "fingerprint.txt"
    if parts.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def fits_table(rows: list[dict]) -> Table:
    """Fit results as a table with units (the same columns as the networks' catalogues, plus fit details)."""
    table = Table(rows=rows)
    order = [
        "id",
        *OUTPUT_COLUMNS,
        *(f"{name}_err" for name in SERSIC_COLUMNS),
        "pa_deg",
        "x_pix",
        "y_pix",
        "sky",
        "reduced_chi2",
        "n_evaluations",
        "n_starts",
        "flags",
        "fit_seconds",
    ]
    table = table[order]
    for name, unit in UNITS.items():
        table[name].unit = unit
    return table


def fit_stamp_set(
    set_dir: str | Path,
    out_path: str | Path,
    psf_path: str | Path,
    settings: FitSettings,
    workers: int | None = None,
    block_size: int = 50,
    max_stamps: int | None = None,
    progress: bool = True,
    starts: dict | None = None,
) -> dict:
    """Fit every stamp of a set and write the catalogue atomically.

    With ``starts`` (:func:`legato.classical.starts.network_starts`: a network's estimates by id) each fit
    starts from the network's estimate instead of the image moments; stamps without
    one start from the moments.

    Finished blocks are kept in ``<out>.parts/`` until the end, so an
    interrupted run resumes where it stopped without refitting or duplicating
    a stamp; blocks left by a fit of other data or settings are discarded.

    Returns
    -------
    dict
        Counts (fitted, flagged per flag), wall time and fits per second.
    """
    from tqdm import tqdm

    set_dir, out_path = Path(set_dir), Path(out_path)
    read_psf_image(psf_path, expected_pixel_scale=settings.pixel_scale)  # fail fast
    fingerprint = run_fingerprint(set_dir, Path(psf_path), settings, block_size, starts)
    expected = sum(len(b[1]) for b in _blocks(set_dir, block_size, max_stamps))
    finished = _finished_catalogue(out_path, fingerprint, expected)
    if finished is not None:
        return finished
    parts = out_path.with_name(out_path.name + ".parts")
    _prepare_parts(parts, fingerprint)
    workers = workers or os.cpu_count() or 1
    todo = [b for b in _blocks(set_dir, block_size, max_stamps, starts) if not (parts / f"part_{b[0]:05d}.fits").exists()]
    done_before = len(list(parts.glob("part_*.fits")))
    start = time.perf_counter()
    fitted_now = 0
    with tqdm(total=sum(len(b[1]) for b in todo), desc="fit-classical", unit="fit", disable=not progress) as bar:
        # spawn, not fork: a forked child can inherit Imfit/FFTW thread state from the parent and hang
        context = multiprocessing.get_context("spawn")
        cores = _core_queue(context, workers)
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(str(psf_path), settings, cores)
        ) as pool:
            for index, rows in pool.map(_fit_block, todo):
                staging = parts / f"part_{index:05d}.fits.tmp"
                fits_table(rows).write(staging, format="fits", overwrite=True)
                staging.replace(parts / f"part_{index:05d}.fits")
                fitted_now += len(rows)
                bar.update(len(rows))
    wall = time.perf_counter() - start
    tables = [Table.read(p) for p in sorted(parts.glob("part_*.fits"))]
    catalogue = vstack(tables, metadata_conflicts="silent")
    for key in ("FITWALL", "FITRATE", "WORKERS"):
        catalogue.meta.pop(key, None)
    if fitted_now and not done_before:  # the whole catalogue fitted in this call: keep its speed with it
        catalogue.meta.update({"FITWALL": round(wall, 2), "FITRATE": round(fitted_now / wall, 3), "WORKERS": workers})
    catalogue.meta.update(
        {
            "FINGERPR": fingerprint,
            "METHOD": "imfit-sersic",
            "START": "network" if starts else "moments",
            "SOLVER": settings.solver,
            "MAGZPT": settings.zeropoint,
            "PIXSCALE": settings.pixel_scale,
        }
    )
    tmp = out_path.with_name(out_path.name + ".tmp")
    catalogue.write(tmp, format="fits", overwrite=True)
    tmp.replace(out_path)
    shutil.rmtree(parts)
    return _summary(catalogue, done_before, wall, workers, fitted_now)


def _finished_catalogue(out_path: Path, fingerprint: str, expected: int) -> dict | None:
    """The summary of an already finished fit of the same data and settings (nothing to redo), else None."""
    if not out_path.is_file():
        return None
    try:
        catalogue = Table.read(out_path)
    except (OSError, ValueError):
        return None
    if catalogue.meta.get("FINGERPR") != fingerprint or len(catalogue) != expected:
        return None
    summary = _summary(catalogue, 0, 0.0, 0, 0)
    summary["reused"] = True
    if "FITRATE" in catalogue.meta:  # the speed of the fit that made it
        summary.update(wall_seconds=catalogue.meta["FITWALL"], fits_per_second=catalogue.meta["FITRATE"], workers=catalogue.meta["WORKERS"])
    return summary


def _summary(catalogue: Table, done_before: int, wall: float, workers: int, fitted_now: int) -> dict:
    flags = np.asarray(catalogue["flags"])
    fit_seconds = np.asarray(catalogue["fit_seconds"], dtype=float)
    return {
        "fitted": len(catalogue),
        "resumed_blocks": done_before,
        "flagged": {name: int(np.sum((flags & bit) > 0)) for bit, name in FLAG_NAMES.items()},
        "wall_seconds": round(wall, 2),
        "workers": workers,
        "fits_per_second": round(fitted_now / wall, 3) if wall > 0 and fitted_now else None,
        "median_fit_seconds": float(np.median(fit_seconds)),
        "fits_per_second_per_worker": round(len(fit_seconds) / float(np.sum(fit_seconds)), 3),
    }
