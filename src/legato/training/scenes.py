"""Crowded training stamps composed on the fly: a target galaxy, its neighbours, sky residuals, noise.

Survey stamps are not isolated galaxies: one realistic stamp in three and most
real CANDELS UDS stamps hold neighbours. A scene batch takes target models from
the noiseless library, adds other models of the same library (same band, so
the same PSF family) as neighbours at CANDELS-like distances and brightness
ratios (their own catalogue magnitudes), adds the small sky offsets and
gradients that real sky subtraction leaves, and draws survey noise. The
target's true parameters stay the labels, exactly.

Like :func:`legato.training.noisy_batches.noisy_batch`, a batch is a pure
function of ``(seed, step)``, so a resumed training sees the batches an
uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legato.errors import ConfigError
from legato.simulation.noise import NoiseModel, survey_noise_realisation
from legato.symmetry import dihedral
from legato.training.noisy_batches import DepthRange


@dataclass(frozen=True)
class SceneModel:
    """How crowded the training stamps are.

    Attributes
    ----------
    neighbour_probability : float
        Probability that a stamp holds at least one neighbour.
    max_neighbours : int
        Largest number of neighbours (1 to this many, uniformly, when there are any).
    distance_pix : tuple of float
        Range of neighbour centre distances from the target's, pixels (drawn uniformly in distance).
    sky_offset_sigma : float
        Standard deviation of a constant sky residual, in units of the stamp's sky sigma.
    sky_gradient_sigma : float
        Standard deviation of a linear sky residual's amplitude across the stamp, in sky sigmas.
    bright_flattening : float
        Targets are drawn with probability proportional to ``density(mag) ** -bright_flattening``
        (0: the catalogue's magnitude prior; 1: flat in magnitude), so the rare bright galaxies,
        whose physical limit is tightest, get the steps they need.
    """

    neighbour_probability: float = 0.6
    max_neighbours: int = 3
    distance_pix: tuple = (4.0, 30.0)
    sky_offset_sigma: float = 0.3
    sky_gradient_sigma: float = 0.3
    bright_flattening: float = 0.5

    def __post_init__(self):
        if not 0 <= self.neighbour_probability <= 1:
            raise ConfigError(f"neighbour_probability must be in [0, 1], got {self.neighbour_probability}")
        if self.max_neighbours < 1:
            raise ConfigError(f"max_neighbours must be >= 1, got {self.max_neighbours}")
        low, high = self.distance_pix
        if not 0 <= low <= high:
            raise ConfigError(f"distance_pix must be a range 0 <= low <= high, got {self.distance_pix}")
        if self.sky_offset_sigma < 0 or self.sky_gradient_sigma < 0 or not 0 <= self.bright_flattening <= 1:
            raise ConfigError("sky residuals must be >= 0 and bright_flattening in [0, 1]")

    def target_weights(self, mag: np.ndarray, bin_width: float = 0.25) -> np.ndarray:
        """Sampling probability of each library row as a target (sums to 1)."""
        mag = np.asarray(mag, dtype=float)
        edges = np.arange(mag.min(), mag.max() + bin_width, bin_width)
        counts, edges = np.histogram(mag, bins=edges if len(edges) > 1 else 1)
        density = counts[np.clip(np.digitize(mag, edges) - 1, 0, len(counts) - 1)].astype(float)
        weights = density**-self.bright_flattening
        return weights / weights.sum()


def shift_into(canvas: np.ndarray, image: np.ndarray, dy: int, dx: int) -> None:
    """Add ``image`` to ``canvas`` (same shape) shifted by whole pixels; what falls outside is lost."""
    height, width = canvas.shape
    ys, yd = (slice(0, height - dy), slice(dy, height)) if dy >= 0 else (slice(-dy, height), slice(0, height + dy))
    xs, xd = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
    if ys.start < ys.stop and xs.start < xs.stop:
        canvas[yd, xd] += image[ys, xs]


@dataclass(frozen=True)
class SceneLibrary:
    """The noiseless models a scene batch is made from, indexed by band.

    Attributes
    ----------
    models : numpy.ndarray
        ``(N, H, W)`` noiseless models, electrons/s.
    targets : numpy.ndarray
        ``(N, T)`` standardised targets.
    band_index : numpy.ndarray
        ``(N,)`` band of each model (neighbours come from the same band).
    weights : numpy.ndarray
        ``(N,)`` target sampling probabilities (:meth:`SceneModel.target_weights`).
    extra : numpy.ndarray or None
        ``(N, K)`` per-model inputs passed through with the batch (the PSF summary), or None.
    """

    models: np.ndarray
    targets: np.ndarray
    band_index: np.ndarray
    weights: np.ndarray
    extra: np.ndarray | None = None

    def members(self) -> dict[int, np.ndarray]:
        """Row indices of each band."""
        return {int(b): np.flatnonzero(self.band_index == b) for b in np.unique(self.band_index)}


def compose_scenes(
    library: SceneLibrary, rows: np.ndarray, scene: SceneModel, rng: np.random.Generator, members: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless scenes of the targets ``rows``: each target (a random symmetry) plus its neighbours.

    Returns
    -------
    tuple of numpy.ndarray
        ``(len(rows), H, W)`` float32 scenes and ``(len(rows),)`` neighbour counts.
    """
    members = members if members is not None else library.members()
    count = len(rows)
    scenes = dihedral(library.models[rows], rng.integers(0, 8, count)).astype(np.float32)
    has = rng.random(count) < scene.neighbour_probability
    neighbours = np.where(has, rng.integers(1, scene.max_neighbours + 1, count), 0)
    low, high = scene.distance_pix
    for k in np.flatnonzero(neighbours):
        pool = members[int(library.band_index[rows[k]])]
        for _ in range(neighbours[k]):
            other = int(pool[rng.integers(0, len(pool))])
            distance, angle = rng.uniform(low, high), rng.uniform(0, 2 * np.pi)
            image = dihedral(library.models[other : other + 1], rng.integers(0, 8, 1))[0]
            shift_into(scenes[k], image, int(round(distance * np.sin(angle))), int(round(distance * np.cos(angle))))
    return scenes, neighbours


def sky_residuals(shape: tuple, sigma: np.ndarray, scene: SceneModel, rng: np.random.Generator) -> np.ndarray:
    """Constant plus linear sky residuals of ``(N, H, W)`` stamps, ``sigma`` ``(N,)`` their sky sigmas."""
    count, height, width = shape
    yy, xx = np.mgrid[:height, :width]
    yy, xx = (yy - (height - 1) / 2) / height, (xx - (width - 1) / 2) / width
    offset = rng.normal(0.0, scene.sky_offset_sigma, count)
    amplitude = rng.normal(0.0, scene.sky_gradient_sigma, count)
    angle = rng.uniform(0, 2 * np.pi, count)
    plane = offset[:, None, None] + amplitude[:, None, None] * (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
    return (plane * np.asarray(sigma)[:, None, None]).astype(np.float32)


def scene_stamps(
    library: SceneLibrary,
    rows: np.ndarray,
    scene: SceneModel,
    noise: NoiseModel,
    depths: DepthRange,
    rng: np.random.Generator,
    members: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy crowded stamps of the targets ``rows`` at random depths: ``(N, H, W)`` float32 and the neighbour counts."""
    scenes, neighbours = compose_scenes(library, rows, scene, rng, members)
    scale, correlation = depths.draw(len(rows), rng)
    stamps = survey_noise_realisation(scenes, noise, scale, correlation, rng)
    stamps += sky_residuals(stamps.shape, noise.sky_sigma * scale, scene, rng)
    return stamps, neighbours


def scene_batch(
    library: SceneLibrary,
    scene: SceneModel,
    noise: NoiseModel,
    depths: DepthRange,
    batch_size: int,
    seed: int,
    step: int,
    members: dict | None = None,
) -> tuple:
    """Training batch ``step`` of crowded stamps (targets drawn by :attr:`SceneLibrary.weights`).

    Returns
    -------
    tuple
        Stamps ``(batch_size, H, W)`` float32, their targets, and (when the library
        carries them) the per-target extra inputs.
    """
    rng = np.random.default_rng([seed, step])
    rows = rng.choice(len(library.models), size=batch_size, p=library.weights)
    stamps, _ = scene_stamps(library, rows, scene, noise, depths, rng, members)
    batch = (stamps, library.targets[rows])
    return batch + ((library.extra[rows],) if library.extra is not None else ())
