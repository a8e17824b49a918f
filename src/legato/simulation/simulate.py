"""Simulated training/validation/test sets: parameters, parallel rendering, chunked output."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from legato.catalog.vanderwel import read_vanderwel_catalog, select_good_fits
from legato.columns import SIMULATED_COLUMNS
from legato.conventions import PIXEL_SCALE_ARCSEC, mag_to_flux, zeropoint
from legato.errors import ConfigError
from legato.io.fingerprint import cpu_stand_in, recipe
from legato.io.folders import publish_folder
from legato.io.stamps import StampSetMeta, write_stamp_set
from legato.simulation.noise import NoiseModel, segmentation_snr
from legato.simulation.parameters import ParameterSpace, draw_parameters
from legato.simulation.psf import read_psf_image
from legato.simulation.render import render_sersic_stamp

SPLITS = ("train", "val", "test")
TASK_SIZE = 250
# the project's sources that compute a single-Sérsic set (the code part of its fingerprint; dvc.yaml lists them as deps too)
CODE = ("simulation", "catalog", "io/stamps.py", "io/fingerprint.py", "conventions.py", "config.py", "columns.py")


@dataclass(frozen=True)
class BandMixture:
    """The bands of a multi-band set: a PSF image and a prior catalogue per band, and PSF jitter.

    Attributes
    ----------
    psfs : dict
        Band -> PSF FITS image (``legato make-psf --band``, or a measured one).
    catalogs : dict
        Band -> GALFIT catalogue the band's parameters are drawn from (van der Wel
        fits in that band, or the nearest band that has one).
    weights : dict
        Band -> relative frequency of the band in the set.
    psf_jitter : float
        Each galaxy is drawn with its band's PSF dilated by a factor uniform in
        ``[1 - psf_jitter, 1 + psf_jitter]`` (real PSF models are never exact).
    """

    psfs: dict
    catalogs: dict
    weights: dict
    psf_jitter: float = 0.0

    def __post_init__(self):
        if not self.psfs or set(self.psfs) != set(self.catalogs) or set(self.psfs) != set(self.weights):
            raise ConfigError("a band mixture needs the same bands in psfs, catalogs and weights")
        for band in self.psfs:
            zeropoint(band)
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ConfigError("band weights must be >= 0 and not all zero")
        if not 0 <= self.psf_jitter < 0.5:
            raise ConfigError(f"psf_jitter must be in [0, 0.5), got {self.psf_jitter}")

    @property
    def bands(self) -> tuple:
        """The bands, in a fixed order (their index is the ``band_index`` column)."""
        return tuple(self.psfs)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulated data set (the ``simulate`` section of params.yaml).

    Attributes
    ----------
    catalog : str
        Path of the van der Wel GALFIT catalogue the parameters are drawn from.
    psf : str
        Path of the PSF FITS image.
    sizes : dict
        Number of galaxies per split (``train``, ``val``, ``test``).
    seed : int
        Master random seed.
    band : str
        Filter (sets the zeropoint).
    stamp_size : int
        Stamp side in pixels.
    pixel_scale : float
        Arcsec / pixel.
    chunk_size : int
        Stamps per FITS file.
    space : ParameterSpace
        Parameter ranges and sampler settings.
    noise : NoiseModel
        Noise model.
    snr_threshold_sigma : float
        Segmentation threshold used for the stored S/N, in sky sigmas.
    noiseless : bool
        Store the noiseless PSF-convolved models instead of noisy stamps (the
        production estimator draws its noise at training time, at every depth).
    bands : BandMixture or None
        Draw every galaxy in one of several bands, each with its own PSF, zeropoint
        and prior (``band``, ``psf_dilation``, ``psf_fwhm_arcsec``, ``psf_r50_arcsec``
        and ``zeropoint`` label columns); None: the one ``band`` and ``psf``.
    """

    catalog: str
    psf: str
    sizes: dict = field(default_factory=lambda: {"train": 50_000, "val": 5_000, "test": 5_000})
    seed: int = 20180101
    band: str = "F160W"
    stamp_size: int = 64
    pixel_scale: float = PIXEL_SCALE_ARCSEC
    chunk_size: int = 5_000
    space: ParameterSpace = field(default_factory=ParameterSpace)
    noise: NoiseModel = field(default_factory=lambda: NoiseModel(sky_sigma=0.0067, exposure_time=5000.0))
    snr_threshold_sigma: float = 1.0
    noiseless: bool = False
    bands: BandMixture | None = None

    def __post_init__(self):
        zeropoint(self.band)
        unknown = set(self.sizes) - set(SPLITS)
        if unknown:
            raise ConfigError(f"unknown split(s) {sorted(unknown)}; splits are {', '.join(SPLITS)}")
        for split, size in self.sizes.items():
            if not isinstance(size, (int, np.integer)) or size < 0:
                raise ConfigError(f"size of split {split!r} must be a non-negative integer, got {size!r}")
        if self.stamp_size < 8:
            raise ConfigError(f"stamp_size must be at least 8 pixels, got {self.stamp_size}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.pixel_scale <= 0:
            raise ConfigError(f"pixel_scale must be positive, got {self.pixel_scale}")

    @property
    def zeropoint(self) -> float:
        """AB zeropoint of the band."""
        return zeropoint(self.band)


# --- worker side -----------------------------------------------------------------------------

_WORKER: dict = {}


def psf_paths(config: SimulationConfig) -> tuple[str, ...]:
    """The PSF image of each band index (the one ``config.psf`` without a band mixture)."""
    return tuple(config.bands.psfs[band] for band in config.bands.bands) if config.bands else (config.psf,)


def _init_worker(config: SimulationConfig) -> None:
    _WORKER["config"] = config
    _WORKER["psfs"] = [read_psf_image(path, expected_pixel_scale=config.pixel_scale).galsim_profile() for path in psf_paths(config)]


def _render_task(task: tuple[int, np.ndarray, np.ndarray]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Render one task: galaxies of one split, as (split index, row indices, parameter array).

    A parameter row holds :data:`SIMULATED_COLUMNS`, then the band index, the PSF dilation and the zeropoint.
    """
    split_index, rows, params = task
    config: SimulationConfig = _WORKER["config"]
    size = config.stamp_size
    stamps = np.empty((len(rows), size, size), dtype=np.float32)
    snr = np.empty(len(rows))
    for k, (row, p) in enumerate(zip(rows, params)):
        psf = _WORKER["psfs"][int(p[7])]
        if p[8] != 1.0:
            psf = psf.dilate(float(p[8]))
        model = render_sersic_stamp(*p[:7], psf=psf, size=size, pixel_scale=config.pixel_scale, zeropoint=float(p[9]))
        if config.noiseless:
            stamps[k] = model
        else:
            rng = np.random.default_rng([config.seed, split_index, int(row)])
            stamps[k] = config.noise.add_noise(model, rng)
        snr[k] = segmentation_snr(model, config.noise, config.snr_threshold_sigma)
    return split_index, rows, stamps, snr


RENDER_COLUMNS = ("band_index", "psf_dilation", "zeropoint")  # how each galaxy is drawn


def _render_parameters(labels: Table, default_zeropoint: float) -> np.ndarray:
    """:data:`SIMULATED_COLUMNS` and :data:`RENDER_COLUMNS` of every galaxy (one-band sets: band 0, no dilation)."""
    count = len(labels)
    defaults = {"band_index": np.zeros(count), "psf_dilation": np.ones(count), "zeropoint": np.full(count, default_zeropoint)}
    columns = [np.asarray(labels[c], float) for c in SIMULATED_COLUMNS]
    columns += [np.asarray(labels[c], float) if c in labels.colnames else defaults[c] for c in RENDER_COLUMNS]
    return np.column_stack(columns)


def _tasks(labels_by_split: dict[str, Table], default_zeropoint: float):
    """Tasks in Sérsic-index order, so each worker reuses GalSim's tables for one index."""
    entries = []
    for split_index, split in enumerate(SPLITS):
        labels = labels_by_split.get(split)
        if labels is None or len(labels) == 0:
            continue
        params = _render_parameters(labels, default_zeropoint)
        entries.append((np.full(len(labels), split_index), np.arange(len(labels)), params))
    if not entries:
        return []
    split_ids = np.concatenate([e[0] for e in entries])
    rows = np.concatenate([e[1] for e in entries])
    params = np.concatenate([e[2] for e in entries])
    # slowest (high-n) galaxies first, so the workers finish together
    order = np.lexsort((rows, split_ids, -params[:, 2]))
    tasks = []
    start = 0
    while start < len(order):
        stop = min(start + TASK_SIZE, len(order))
        block = order[start:stop]
        # a task holds one split only, so results can be written back by row
        first_split = split_ids[block[0]]
        same = split_ids[block] == first_split
        if not same.all():
            stop = start + int(np.argmin(same))
            block = order[start:stop]
        tasks.append((int(first_split), rows[block], params[block]))
        start = stop
    return tasks


def recipe_settings(config: SimulationConfig) -> dict:
    """The configuration part of a recipe: every field, but ``bands`` only when there is a mixture.

    A one-band set's recipe then reads as it did before band mixtures existed, so
    its recorded fingerprints (and what depends on them) stand.
    """
    settings = dataclasses.asdict(config)
    if config.bands is None:
        del settings["bands"]
    return settings


def split_recipes(config: SimulationConfig) -> dict[str, dict]:
    """The recipe of every split (:func:`legato.io.fingerprint.recipe`).

    A split's stamps depend on its own size only (each split and each stamp has
    its own seeded generator), so a split's recipe leaves the other sizes out:
    a larger training set does not make the test set's dependants stale.
    """
    settings = recipe_settings(config)
    name = ("bands" if config.bands else "") + ("noiseless" if config.noiseless else "simulated")
    inputs = (config.catalog, config.psf)
    if config.bands is not None:
        inputs = tuple(sorted(set(config.bands.psfs.values()) | set(config.bands.catalogs.values())))
    return {split: recipe(name, split, settings | {"sizes": {split: int(config.sizes.get(split, 0))}}, inputs) for split in SPLITS}


def _good_fits(path: str, space: ParameterSpace) -> Table:
    return select_good_fits(read_vanderwel_catalog(path), mag_min=space.mag_min, mag_max=space.mag_max, re_max_arcsec=space.re_max_arcsec)


def draw_split_parameters(config: SimulationConfig) -> dict[str, Table]:
    """Draw the parameters of every split (deterministic in ``config.seed``).

    With a band mixture, each split's galaxies are shared out over the bands
    (multinomially, by weight); each band draws from its own prior catalogue
    with its own generator, and every galaxy gets a PSF dilation.

    Returns
    -------
    dict of str to astropy.table.Table
        Label tables per split, before rendering.
    """
    if config.bands is None:
        catalog = _good_fits(config.catalog, config.space)
        tables = {}
        for split_index, split in enumerate(SPLITS):
            size = int(config.sizes.get(split, 0))
            rng = np.random.default_rng([config.seed, split_index])
            table = draw_parameters(catalog, size, config.space, rng)
            table.add_column(np.arange(size, dtype=np.int64), name="id", index=0)
            table["flux"] = mag_to_flux(np.asarray(table["mag"]), config.zeropoint) * u.ct / u.s
            tables[split] = table
        return tables
    return _draw_band_mixture(config)


def _draw_band_mixture(config: SimulationConfig) -> dict[str, Table]:
    from astropy.table import vstack

    from legato.simulation.psf import psf_summary

    mixture = config.bands
    catalogs = {path: _good_fits(path, config.space) for path in sorted(set(mixture.catalogs.values()))}
    summaries = {band: psf_summary(read_psf_image(mixture.psfs[band], expected_pixel_scale=config.pixel_scale)) for band in mixture.bands}
    weights = np.array([mixture.weights[band] for band in mixture.bands], dtype=float)
    tables = {}
    for split_index, split in enumerate(SPLITS):
        size = int(config.sizes.get(split, 0))
        counts = np.random.default_rng([config.seed, split_index]).multinomial(size, weights / weights.sum())
        parts = []
        for band_index, (band, count) in enumerate(zip(mixture.bands, counts)):
            rng = np.random.default_rng([config.seed, split_index, 1000 + band_index])
            part = draw_parameters(catalogs[mixture.catalogs[band]], int(count), config.space, rng)
            dilation = rng.uniform(1.0 - mixture.psf_jitter, 1.0 + mixture.psf_jitter, int(count))
            fwhm, r50 = summaries[band]
            part["band"] = np.full(int(count), band)
            part["band_index"] = np.full(int(count), band_index, dtype=np.int16)
            part["psf_dilation"] = dilation
            part["psf_fwhm_arcsec"] = fwhm * dilation * u.arcsec
            part["psf_r50_arcsec"] = r50 * dilation * u.arcsec
            part["zeropoint"] = np.full(int(count), zeropoint(band)) * u.mag
            part["flux"] = mag_to_flux(np.asarray(part["mag"]), zeropoint(band)) * u.ct / u.s
            parts.append(part)
        table = (
            vstack(parts, metadata_conflicts="silent")
            if parts
            else draw_parameters(catalogs[next(iter(catalogs))], 0, config.space, np.random.default_rng(0))
        )
        table.add_column(np.arange(len(table), dtype=np.int64), name="id", index=0)
        tables[split] = table
    return tables


def simulate(
    config: SimulationConfig,
    out_dir: str | Path,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Simulate every split and write it as chunked FITS stamp sets.

    Output is written to a temporary folder and moved into place at the end,
    so an interrupted run never leaves a half-written set.

    Parameters
    ----------
    config : SimulationConfig
        The data set definition.
    out_dir : str or Path
        Output folder; gets one sub-folder per split.
    workers : int, optional
        Worker processes (default: all cores).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        Summary: stamps per split, wall time (s), stamps per second, workers.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    workers = workers or os.cpu_count() or 1
    psf_ids = [
        read_psf_image(path, expected_pixel_scale=config.pixel_scale).psf_id for path in psf_paths(config)
    ]  # fail fast, in the main process
    psf_id = psf_ids[0] if config.bands is None else "multi-band (psf_fwhm_arcsec per row)"
    start = time.perf_counter()
    labels = draw_split_parameters(config)
    tasks = _tasks(labels, config.zeropoint)
    total = sum(len(t) for t in labels.values())
    stamps = {split: np.empty((len(table), config.stamp_size, config.stamp_size), dtype=np.float32) for split, table in labels.items()}
    snr = {split: np.empty(len(table)) for split, table in labels.items()}
    with tqdm(total=total, desc="simulate", unit="stamp", disable=not progress) as bar:
        if workers == 1:
            _init_worker(config)
            results = map(_render_task, tasks)
            for split_index, rows, batch, batch_snr in results:
                split = SPLITS[split_index]
                stamps[split][rows] = batch
                snr[split][rows] = batch_snr
                bar.update(len(rows))
        else:
            # spawn, not fork: a process that already runs TensorFlow or Imfit threads cannot fork safely
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(config,)) as pool:
                for split_index, rows, batch, batch_snr in pool.map(_render_task, tasks):
                    split = SPLITS[split_index]
                    stamps[split][rows] = batch
                    snr[split][rows] = batch_snr
                    bar.update(len(rows))
    render_seconds = time.perf_counter() - start

    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    for split, table in labels.items():
        table["snr"] = snr[split]
        meta = StampSetMeta(
            pixel_scale=config.pixel_scale,
            zeropoint=config.zeropoint,
            band=config.band if config.bands is None else "MULTI",
            psf_id=psf_id,
            domain="simulated-sersic-noiseless" if config.noiseless else "simulated-sersic",
            extra={"SEED": config.seed, "SPLIT": split, "SKYSIG": config.noise.sky_sigma, "EXPTIME": config.noise.exposure_time}
            | ({"SKYSIG": 0.0, "NOMSKY": config.noise.sky_sigma} if config.noiseless else {}),
        )
        write_stamp_set(staging / split, cpu_stand_in(stamps[split]), table, meta, chunk_size=config.chunk_size)
    publish_folder(staging, out_dir)
    wall = time.perf_counter() - start
    return {
        "stamps": {split: len(t) for split, t in labels.items()},
        "total_stamps": total,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "stamp_size": config.stamp_size,
        "render_seconds": round(render_seconds, 2),
        "wall_seconds": round(wall, 2),
        "stamps_per_second": round(total / wall, 1) if wall > 0 else None,
    }
