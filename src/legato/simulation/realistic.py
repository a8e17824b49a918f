"""A realistic F160W domain: galaxies that break the single-Sérsic assumption the way real ones do.

Each galaxy starts from a (mag, re, n, q) tuple drawn from the van der Wel
catalogue (as the Sérsic domain does) and is rendered as one of four kinds:

- ``sersic``: the single-Sérsic profile itself (the reference population);
- ``bulge_disc``: a de Vaucouleurs bulge plus an exponential disc with their
  own radii, axis ratios and position angles;
- ``clumpy``: an exponential disc with part of its light in star-forming
  clumps (``galsim.RandomKnots``);
- ``cosmos``: a real HST/ACS F814W COSMOS galaxy (``galsim.RealGalaxy``),
  rotated, possibly flipped, rescaled to the drawn radius and flux, and
  reconvolved to the F160W PSF and 0.06"/pixel. Its own (rescaled, PSF-smoothed)
  COSMOS noise stays in the stamp.

Every stamp may get Sérsic neighbours inside the stamp, is drawn with a PSF
slightly wider or narrower than the nominal one (PSF mismatch), and gets
correlated sky noise calibrated on real CANDELS UDS F160W data: a per-pixel
sigma drawn log-uniformly over ``sky_sigma_range`` (the depths of the real
blocks' GALFIT residuals) and white noise smoothed by the Gaussian kernel whose
neighbour-pixel correlation is the residuals' (drizzling correlates CANDELS
pixels; :mod:`legato.analysis.noise_texture` measures both the same way on real
and simulated stamps). A COSMOS galaxy whose stamp would carry negative holes
(more than 0.5% of the pixels below -4 sigma, an artefact of the deconvolved
ACS image no real F160W image has) is replaced by another COSMOS galaxy of the
same split.

The generation parameters are kept (``gen_*`` columns) but are not the labels:
like van der Wel's real galaxies, these are labelled by a single-Sérsic fit
(:mod:`legato.classical.labels`).

The set is split into test A and pool B so that no real COSMOS galaxy and no
catalogue row seeds galaxies in both.
"""

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

from legato.analysis.noise_texture import HOLE_FRACTION_LIMIT, has_negative_holes
from legato.catalog.vanderwel import read_vanderwel_catalog, select_good_fits
from legato.conventions import circular_half_light_radius, galfit_pa_to_galsim_beta_deg, mag_to_flux
from legato.errors import ConfigError
from legato.io.fingerprint import cpu_stand_in, recipe
from legato.io.folders import publish_folder
from legato.io.stamps import StampSetMeta, write_stamp_set
from legato.simulation.noise import correlated_noise
from legato.simulation.parameters import draw_parameters
from legato.simulation.psf import read_psf_image
from legato.simulation.render import FOLDING_THRESHOLD
from legato.simulation.simulate import SimulationConfig, recipe_settings

KINDS = ("sersic", "bulge_disc", "clumpy", "cosmos")
SPLITS = ("A", "B")
COSMOS_CATALOGUE = "real_galaxy_catalog_26_extension_example.fits"
TASK_SIZE = 100
# the project's sources that compute the realistic raw sets (the code part of their fingerprints)
CODE = (
    "simulation",
    "catalog",
    "analysis/noise_texture.py",
    "io/stamps.py",
    "io/fingerprint.py",
    "conventions.py",
    "config.py",
    "stats.py",
)


@dataclass(frozen=True)
class RealisticConfig:
    """The realistic domain (the ``realistic`` section of params.yaml).

    Attributes
    ----------
    base : SimulationConfig
        Catalogue, PSF, band, stamp size, pixel scale, noise and parameter ranges shared with the Sérsic domain.
    sizes : dict
        Galaxies in test A and pool B.
    seed : int
        Master random seed.
    kinds : dict
        Fraction of each kind (``sersic``, ``bulge_disc``, ``clumpy``, ``cosmos``); normalised to sum 1.
    cosmos_dir : str
        Folder of the GalSim real-galaxy catalogue (COSMOS F814W sample).
    neighbour_probability : float
        Probability that a stamp holds neighbours.
    max_neighbours : int
        Largest number of neighbours in one stamp.
    neighbour_distance_pix : tuple of float
        Range of neighbour distances from the stamp centre, pixels.
    psf_dilation : tuple of float
        Range of the factor applied to the PSF size when drawing (the fitters assume 1).
    noise_correlation_pix : float
        Gaussian smoothing (sigma, pixels) of the sky noise; 0 = white.
    sky_sigma_range : tuple of float or None
        Per-pixel sky sigma range (electrons/s), drawn log-uniformly per stamp; None = the
        calibrated ``simulate.noise.sky_sigma`` for every stamp.
    max_cosmos_redraws : int
        COSMOS galaxies tried in turn when a stamp shows negative holes.
    cosmos_noise_fraction : float
        A COSMOS galaxy is made at most as bright as keeps its own (rescaled) noise below this
        fraction of the sky sigma; the added sky noise is reduced so the total matches the sky sigma.
    """

    base: SimulationConfig
    cosmos_dir: str
    sizes: dict = field(default_factory=lambda: {"A": 1_000, "B": 4_000})
    seed: int = 20180606
    kinds: dict = field(default_factory=lambda: {"sersic": 0.15, "bulge_disc": 0.35, "clumpy": 0.2, "cosmos": 0.3})
    neighbour_probability: float = 0.35
    max_neighbours: int = 2
    neighbour_distance_pix: tuple = (9.0, 26.0)
    psf_dilation: tuple = (0.95, 1.08)
    noise_correlation_pix: float = 0.6
    cosmos_noise_fraction: float = 0.5
    sky_sigma_range: tuple | None = None
    max_cosmos_redraws: int = 10

    def __post_init__(self):
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown realistic kind(s) {sorted(unknown)}; kinds are {', '.join(KINDS)}")
        if any(v < 0 for v in self.kinds.values()) or sum(self.kinds.values()) <= 0:
            raise ConfigError("realistic.kinds fractions must be >= 0 and not all zero")
        if set(self.sizes) - set(SPLITS) or any(int(v) < 0 for v in self.sizes.values()):
            raise ConfigError(f"realistic.sizes must give non-negative sizes for {', '.join(SPLITS)}")
        if not 0 <= self.neighbour_probability <= 1:
            raise ConfigError(f"neighbour_probability must be in [0, 1], got {self.neighbour_probability}")
        lo, hi = self.psf_dilation
        if not 0 < lo <= hi:
            raise ConfigError(f"psf_dilation must be a range 0 < low <= high, got {self.psf_dilation}")
        if self.noise_correlation_pix < 0 or not 0 < self.cosmos_noise_fraction < 1:
            raise ConfigError("noise_correlation_pix must be >= 0 and cosmos_noise_fraction in (0, 1)")
        if self.sky_sigma_range is not None and not 0 < self.sky_sigma_range[0] <= self.sky_sigma_range[1]:
            raise ConfigError(f"sky_sigma_range must be a range 0 < low <= high in electrons/s, got {self.sky_sigma_range}")


def realistic_config(params: dict, overrides: dict | None = None) -> RealisticConfig:
    """Build a :class:`RealisticConfig` from params.yaml (``simulate`` for the shared settings, ``realistic`` for the rest)."""
    from legato.config import section
    from legato.simulation.settings import simulation_config

    base = simulation_config(params)
    values = dict(section(params, "realistic"))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "cosmos_dir" not in values:
        raise ConfigError("missing parameter realistic.cosmos_dir")
    for key in ("neighbour_distance_pix", "psf_dilation", "sky_sigma_range"):
        if values.get(key) is not None:
            values[key] = tuple(float(v) for v in values[key])
    try:
        return RealisticConfig(base=base, **values)
    except TypeError as exc:
        raise ConfigError(f"bad realistic parameters: {exc}") from None


def split_recipes(config: RealisticConfig) -> dict[str, dict]:
    """The recipe of test A and pool B (:func:`legato.io.fingerprint.recipe`).

    Both splits are drawn together (no COSMOS galaxy or catalogue row seeds
    both), so each recipe holds both sizes; the single-Sérsic sizes are left out.
    """
    settings = dataclasses.asdict(config) | {"base": recipe_settings(config.base)}
    settings["base"].pop("sizes")
    inputs = (config.base.catalog, config.base.psf, config.cosmos_dir)
    return {split: recipe("realistic_raw", split, settings, inputs) for split in SPLITS}


def cosmos_catalogue(cosmos_dir: str | Path):
    """The GalSim real-galaxy catalogue of ``cosmos_dir``; its noise correlation file comes with GalSim."""
    import galsim

    path = Path(cosmos_dir) / COSMOS_CATALOGUE
    if not path.is_file():
        raise ConfigError(f"no COSMOS real-galaxy catalogue at {path}")
    catalogue = galsim.RealGalaxyCatalog(COSMOS_CATALOGUE, dir=str(cosmos_dir))
    catalogue.noise_file_name = [str(Path(galsim.meta_data.share_dir) / Path(name).name) for name in catalogue.noise_file_name]
    return catalogue


def in_test_split(identifiers) -> np.ndarray:
    """True for sources reserved to test A (one in five, by identifier), so A and B share no source."""
    return np.asarray(identifiers, dtype=np.int64) % 5 == 0


def draw_realistic_parameters(config: RealisticConfig, n_cosmos: int) -> dict[str, Table]:
    """Generation parameters of both splits (deterministic in ``config.seed``).

    Test A draws from catalogue rows and COSMOS galaxies whose identifier is a
    multiple of five, pool B from the others.
    """
    space = config.base.space
    catalogue = select_good_fits(
        read_vanderwel_catalog(config.base.catalog), mag_min=space.mag_min, mag_max=space.mag_max, re_max_arcsec=space.re_max_arcsec
    )
    reserved = in_test_split(catalogue["NUMBER"])
    names = list(config.kinds)
    weights = np.array([config.kinds[k] for k in names], dtype=float)
    weights /= weights.sum()
    tables = {}
    for index, split in enumerate(SPLITS):
        size = int(config.sizes.get(split, 0))
        rng = np.random.default_rng([config.seed, index])
        rows = catalogue[reserved] if split == "A" else catalogue[~reserved]
        table = draw_parameters(rows, size, space, rng)
        table.add_column(np.arange(size, dtype=np.int64), name="id", index=0)
        table["kind"] = np.asarray(names)[rng.choice(len(names), size, p=weights)]
        pool = cosmos_pool(index, n_cosmos)
        table["cosmos_index"] = np.where(table["kind"] == "cosmos", rng.choice(pool, size) if len(pool) else -1, -1)
        table["n_neighbours"] = np.where(
            rng.uniform(size=size) < config.neighbour_probability, rng.integers(1, config.max_neighbours + 1, size), 0
        )
        table["psf_dilation"] = rng.uniform(*config.psf_dilation, size)
        if config.sky_sigma_range is None:
            sky_sigma = np.full(size, config.base.noise.sky_sigma)
        else:
            sky_sigma = np.exp(rng.uniform(*np.log(config.sky_sigma_range), size))
        table["sky_sigma"] = sky_sigma  # electrons/s per pixel (FITS has no native electron unit, so none is written)
        for name in ("mag", "re_arcsec", "n", "q", "ellipticity", "pa_deg"):
            table.rename_column(name, f"gen_{name}")
        tables[split] = table
    return tables


# --- rendering --------------------------------------------------------------------------------


def _sheared(profile, q: float, pa_deg: float):
    import galsim

    if q >= 1.0:
        return profile
    return profile.shear(q=float(q), beta=float(galfit_pa_to_galsim_beta_deg(pa_deg)) * galsim.degrees)


def _disc(flux, re, q, pa, gsparams):
    import galsim

    radius = float(circular_half_light_radius(re, q))
    return _sheared(galsim.Exponential(half_light_radius=radius, flux=flux, gsparams=gsparams), q, pa)


MAX_COSMOS_DILATION = 1.6  # beyond this the ACS PSF, dilated, is wider than the F160W PSF and deconvolution noise blows up


def galaxy_profile(row, rng: np.random.Generator, zeropoint: float, cosmos=None, gsparams=None):
    """The GalSim profile (before the PSF) of one realistic galaxy.

    Parameters
    ----------
    row : mapping
        Generation parameters: ``kind``, ``gen_mag``, ``gen_re_arcsec``, ``gen_n``, ``gen_q``,
        ``gen_pa_deg``, ``cosmos_index``.
    rng : numpy.random.Generator
        Source of the kind's own random choices.
    zeropoint : float
        AB zeropoint (electrons/s).
    cosmos : galsim.RealGalaxyCatalog, optional
        Needed for the ``cosmos`` kind.
    gsparams : galsim.GSParams, optional

    Returns
    -------
    galsim.GSObject
        Flux in electrons/s, sizes in arcsec. A COSMOS galaxy keeps its own flux
        (see :func:`brighten_within_noise`) and carries its noise as ``.noise``.
    """
    import galsim

    from legato.simulation.render import sersic_profile

    kind = str(row["kind"])
    mag, re, n, q, pa = (float(row[f"gen_{k}"]) for k in ("mag", "re_arcsec", "n", "q", "pa_deg"))
    flux = float(mag_to_flux(mag, zeropoint))
    if kind == "sersic":
        return sersic_profile(mag, re, n, q, pa, zeropoint)
    if kind == "bulge_disc":
        bulge_fraction = rng.uniform(0.1, 0.7)
        q_bulge = rng.uniform(0.6, 1.0)
        re_bulge = re * rng.uniform(0.25, 0.6)
        bulge = _sheared(
            galsim.DeVaucouleurs(
                half_light_radius=float(circular_half_light_radius(re_bulge, q_bulge)), flux=flux * bulge_fraction, gsparams=gsparams
            ),
            q_bulge,
            pa + rng.normal(0.0, 20.0),
        )
        disc = _disc(flux * (1 - bulge_fraction), re * rng.uniform(0.9, 1.4), max(q, 0.1), pa, gsparams)
        return bulge + disc
    if kind == "clumpy":
        clump_fraction = rng.uniform(0.15, 0.45)
        radius = float(circular_half_light_radius(re, max(q, 0.1)))
        knots = galsim.RandomKnots(
            npoints=int(rng.integers(5, 40)),
            half_light_radius=radius,
            flux=flux * clump_fraction,
            rng=galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1))),
            gsparams=gsparams,
        )
        return _disc(flux * (1 - clump_fraction), re, max(q, 0.1), pa, gsparams) + _sheared(knots, max(q, 0.1), pa)
    if kind == "cosmos":
        if cosmos is None:
            raise ConfigError("the cosmos kind needs the COSMOS real-galaxy catalogue")
        index = int(row["cosmos_index"])
        galaxy = galsim.RealGalaxy(cosmos, index=index, gsparams=gsparams)
        own_radius = max(float(galaxy.original_gal.calculateHLR(scale=float(cosmos.pixel_scale[index]))), 0.01)
        dilation = float(np.clip(circular_half_light_radius(re, q) / own_radius, 0.7, MAX_COSMOS_DILATION))
        galaxy = galaxy.rotate(rng.uniform(0.0, 360.0) * galsim.degrees)
        if rng.uniform() < 0.5:
            galaxy = galaxy.transform(-1.0, 0.0, 0.0, 1.0)  # mirror image
        return galaxy.dilate(dilation)
    raise ConfigError(f"unknown realistic kind {kind!r}")


def brighten_within_noise(galaxy, psf, flux: float, noise_limit: float, size: int, pixel_scale: float, seed: int):
    """Scale a noisy (COSMOS) galaxy towards ``flux`` while its own noise stays below ``noise_limit``.

    The galaxy's noise (``galaxy.noise``, a GalSim correlated noise that follows
    every rotation, dilation and convolution) is drawn once on the output grid
    to measure its per-pixel standard deviation at the galaxy's own flux.

    Returns
    -------
    galaxy : galsim.GSObject
        The rescaled galaxy.
    own_noise : float
        Per-pixel standard deviation of its noise in the output stamp, electrons/s.
    """
    import galsim

    noise = galsim.Convolve(galaxy, psf).noise
    field = galsim.ImageD(size, size, scale=pixel_scale)
    unit_noise = 0.0
    if noise is not None:
        field.addNoise(noise.copy(rng=galsim.BaseDeviate(seed)))
        unit_noise = float(np.std(field.array))
    boost = flux / max(float(galaxy.flux), 1e-12)
    if unit_noise > 0:
        boost = min(boost, noise_limit / unit_noise)
    return galaxy.withScaledFlux(boost), unit_noise * boost


def neighbour_profiles(
    count: int, catalogue_rows: Table, distance_pix: tuple, rng: np.random.Generator, zeropoint: float, pixel_scale: float
):
    """Sérsic neighbours drawn from catalogue rows, each shifted to a random position (arcsec) inside the stamp."""
    from legato.simulation.parameters import snap_sersic_index
    from legato.simulation.render import sersic_profile

    profiles = []
    for _ in range(count):
        row = catalogue_rows[int(rng.integers(len(catalogue_rows)))]
        radius = rng.uniform(*distance_pix) * pixel_scale
        angle = rng.uniform(0.0, 2 * np.pi)
        n = float(snap_sersic_index(row["n"], 0.05))
        profile = sersic_profile(
            float(row["mag"]), float(row["re"]), n, float(np.clip(row["q"], 0.1, 1.0)), rng.uniform(-90, 90), zeropoint
        )
        profiles.append(profile.shift(radius * np.cos(angle), radius * np.sin(angle)))
    return profiles


_WORKER: dict = {}


def _init_worker(config: RealisticConfig) -> None:
    base = config.base
    space = base.space
    _WORKER["config"] = config
    _WORKER["psf"] = read_psf_image(base.psf, expected_pixel_scale=base.pixel_scale).galsim_profile()
    _WORKER["cosmos"] = cosmos_catalogue(config.cosmos_dir) if config.kinds.get("cosmos", 0) > 0 else None
    # neighbours come from the whole catalogue down to 1 mag fainter than the sample limit
    _WORKER["neighbours"] = select_good_fits(
        read_vanderwel_catalog(base.catalog), mag_min=space.mag_min, mag_max=space.mag_max + 1.0, re_max_arcsec=space.re_max_arcsec
    )


def render_realistic_stamp(row, split_index: int) -> tuple[np.ndarray, float]:
    """One noisy realistic stamp (electrons/s, sky-subtracted) and its noiseless central-galaxy flux inside the stamp.

    The sky noise has the row's per-pixel ``sky_sigma`` (electrons/s) and the
    domain's correlation kernel; the source Poisson noise follows the calibrated
    exposure time. Must run after the worker initialiser (PSF, COSMOS catalogue
    and neighbour rows loaded).
    """
    import galsim

    config: RealisticConfig = _WORKER["config"]
    base = config.base
    sky_sigma = float(row.get("sky_sigma", base.noise.sky_sigma))
    rng = np.random.default_rng([config.seed, 99, split_index, int(row["id"])])
    gsparams = galsim.GSParams(folding_threshold=FOLDING_THRESHOLD)
    galaxy = galaxy_profile(row, rng, base.zeropoint, _WORKER["cosmos"], gsparams)
    psf = _WORKER["psf"].dilate(float(row["psf_dilation"]))
    own_noise = 0.0
    if str(row["kind"]) == "cosmos":
        galaxy, own_noise = brighten_within_noise(
            galaxy,
            psf,
            float(mag_to_flux(float(row["gen_mag"]), base.zeropoint)),
            config.cosmos_noise_fraction * sky_sigma,
            base.stamp_size,
            base.pixel_scale,
            int(rng.integers(1, 2**31 - 1)),
        )
    half_pixel = 0.0 if base.stamp_size % 2 else 0.5
    offset = galsim.PositionD(float(row["x_offset_pix"]) + half_pixel, float(row["y_offset_pix"]) + half_pixel)
    scene = galaxy
    neighbours = neighbour_profiles(
        int(row["n_neighbours"]), _WORKER["neighbours"], config.neighbour_distance_pix, rng, base.zeropoint, base.pixel_scale
    )
    if neighbours:
        scene = galsim.Add([galaxy, *neighbours])
    image = (
        galsim.Convolve(scene, psf, gsparams=gsparams)
        .drawImage(nx=base.stamp_size, ny=base.stamp_size, scale=base.pixel_scale, offset=offset, method="auto")
        .array.astype(np.float64)
    )
    exposure_time = base.noise.exposure_time
    electrons = np.clip(image, 0.0, None) * exposure_time
    source_noise = (rng.poisson(electrons) - electrons) / exposure_time
    sky = correlated_noise(image.shape, float(np.sqrt(sky_sigma**2 - own_noise**2)), config.noise_correlation_pix, rng)
    return (image + source_noise + sky).astype(np.float32), float(galaxy.flux)


FALLBACK_KIND = "bulge_disc"
HOLE_MARGIN = 0.2  # a COSMOS stamp is redrawn at a fifth of the artefact limit (4 pixels of 4,096; Gaussian noise gives ~0.1),
# so that the check on the measured noise (legato realism), whose sigma scatters around the true one, passes with margin


def cosmos_pool(split_index: int, n_cosmos: int) -> np.ndarray:
    """COSMOS galaxy indices the split may use (test A: identifiers divisible by five; pool B: the others)."""
    reserved = in_test_split(np.arange(n_cosmos))
    return np.flatnonzero(reserved if SPLITS[split_index] == "A" else ~reserved)


def render_without_holes(row, split_index: int) -> tuple[np.ndarray, float, int, int]:
    """A realistic stamp free of negative holes: a COSMOS galaxy that leaves them is replaced by another of its split.

    Returns
    -------
    stamp : numpy.ndarray
        float32, electrons/s.
    flux : float
        Noiseless central-galaxy flux, electrons/s.
    cosmos_index : int
        The COSMOS galaxy finally used (-1 for the other kinds).
    redraws : int
        COSMOS galaxies rejected for negative holes before it; ``max_cosmos_redraws + 1`` when
        none was clean and the galaxy was drawn as :data:`FALLBACK_KIND` instead.
    """
    config: RealisticConfig = _WORKER["config"]
    sky_sigma = float(row.get("sky_sigma", config.base.noise.sky_sigma))
    stamp, flux = render_realistic_stamp(row, split_index)
    index = int(row.get("cosmos_index", -1))
    if str(row["kind"]) != "cosmos":
        return stamp, flux, index, 0
    pool = cosmos_pool(split_index, _WORKER["cosmos"].nobjects)
    redraws = 0
    while has_negative_holes(stamp, sky_sigma, HOLE_MARGIN * HOLE_FRACTION_LIMIT):
        if redraws == config.max_cosmos_redraws:  # no clean COSMOS galaxy found: a bulge + disc galaxy instead
            stamp, flux = render_realistic_stamp({**row, "kind": FALLBACK_KIND, "cosmos_index": -1}, split_index)
            return stamp, flux, -1, redraws + 1
        redraws += 1
        index = int(pool[np.random.default_rng([config.seed, 98, split_index, int(row["id"]), redraws]).integers(len(pool))])
        stamp, flux = render_realistic_stamp({**row, "cosmos_index": index}, split_index)
    return stamp, flux, index, redraws


def _render_task(task):
    split_index, rows = task
    size = _WORKER["config"].base.stamp_size
    stamps = np.empty((len(rows), size, size), dtype=np.float32)
    flux = np.empty(len(rows))
    cosmos_index = np.empty(len(rows), dtype=np.int64)
    redraws = np.empty(len(rows), dtype=np.int64)
    for k, row in enumerate(rows):
        stamps[k], flux[k], cosmos_index[k], redraws[k] = render_without_holes(row, split_index)
    return split_index, [int(r["id"]) for r in rows], stamps, flux, cosmos_index, redraws


def _store(result, stamps: dict, flux: dict, cosmos_index: dict, redraws: dict) -> int:
    split_index, ids, batch, batch_flux, batch_cosmos, batch_redraws = result
    split = SPLITS[split_index]
    stamps[split][ids], flux[split][ids] = batch, batch_flux
    cosmos_index[split][ids], redraws[split][ids] = batch_cosmos, batch_redraws
    return len(ids)


def simulate_realistic(config: RealisticConfig, out_dir: str | Path, workers: int | None = None, progress: bool = True) -> dict:
    """Render test A and pool B and write them as stamp sets ``out_dir/A`` and ``out_dir/B`` (atomically).

    Returns
    -------
    dict
        Galaxies per split and kind, wall time, stamps per second.
    """
    from tqdm import tqdm

    from legato.conventions import flux_to_mag

    out_dir = Path(out_dir)
    base = config.base
    workers = workers or os.cpu_count() or 1
    psf_id = read_psf_image(base.psf, expected_pixel_scale=base.pixel_scale).psf_id
    n_cosmos = cosmos_catalogue(config.cosmos_dir).nobjects if config.kinds.get("cosmos", 0) > 0 else 0
    start = time.perf_counter()
    tables = draw_realistic_parameters(config, n_cosmos)
    tasks = []
    for split_index, split in enumerate(SPLITS):
        rows = [dict(zip(tables[split].colnames, values)) for values in tables[split].iterrows()]
        tasks += [(split_index, rows[i : i + TASK_SIZE]) for i in range(0, len(rows), TASK_SIZE)]
    stamps = {s: np.empty((len(t), base.stamp_size, base.stamp_size), dtype=np.float32) for s, t in tables.items()}
    flux = {s: np.empty(len(t)) for s, t in tables.items()}
    cosmos_index = {s: np.asarray(t["cosmos_index"]).copy() for s, t in tables.items()}
    redraws = {s: np.zeros(len(t), dtype=np.int64) for s, t in tables.items()}
    total = sum(len(t) for t in tables.values())
    with tqdm(total=total, desc="simulate realistic", unit="stamp", disable=not progress) as bar:
        if workers == 1:
            _init_worker(config)
            results = map(_render_task, tasks)
            for result in results:
                bar.update(_store(result, stamps, flux, cosmos_index, redraws))
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(config,)) as pool:
                for result in pool.map(_render_task, tasks):
                    bar.update(_store(result, stamps, flux, cosmos_index, redraws))
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    for split, table in tables.items():
        table["gen_total_mag"] = flux_to_mag(flux[split], base.zeropoint) * u.mag  # after the COSMOS flux cap
        table["cosmos_index"] = cosmos_index[split]  # after the negative-hole redraws
        table["kind"] = np.where((table["kind"] == "cosmos") & (cosmos_index[split] < 0), FALLBACK_KIND, table["kind"])
        table["cosmos_redraws"] = redraws[split]
        meta = StampSetMeta(
            pixel_scale=base.pixel_scale,
            zeropoint=base.zeropoint,
            band=base.band,
            psf_id=psf_id,
            domain="realistic",
            extra={
                "SEED": config.seed,
                "SPLIT": split,
                "SKYSIG": (
                    float(np.median(table["sky_sigma"])) if len(table) else base.noise.sky_sigma,
                    "median sky sigma; per stamp in sky_sigma",
                ),
                "EXPTIME": base.noise.exposure_time,
                "NOISECOR": (config.noise_correlation_pix, "sky noise correlation sigma, pixels"),
            },
        )
        write_stamp_set(staging / split, cpu_stand_in(stamps[split]), table, meta, chunk_size=base.chunk_size)
    publish_folder(staging, out_dir)
    wall = time.perf_counter() - start
    return {
        "stamps": {s: len(t) for s, t in tables.items()},
        "kinds": {s: {k: int(np.sum(t["kind"] == k)) for k in KINDS} for s, t in tables.items()},
        "cosmos_replaced_by_bulge_disc": {s: int(np.sum(r > config.max_cosmos_redraws)) for s, r in redraws.items()},
        "with_neighbours": {s: int(np.sum(t["n_neighbours"] > 0)) for s, t in tables.items()},
        "cosmos_sources": {s: int(len(set(t["cosmos_index"][t["cosmos_index"] >= 0]))) for s, t in tables.items()},
        "cosmos_redrawn_for_negative_holes": {s: int(np.sum(r > 0)) for s, r in redraws.items()},
        "stamps_with_negative_holes": {
            s: int(sum(has_negative_holes(stamp, sigma) for stamp, sigma in zip(stamps[s], np.asarray(t["sky_sigma"]))))
            for s, t in tables.items()
        },
        "sky_sigma_median": {s: round(float(np.median(t["sky_sigma"])), 6) for s, t in tables.items() if len(t)},
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "stamps_per_second": round(total / wall, 1) if wall > 0 else None,
    }
