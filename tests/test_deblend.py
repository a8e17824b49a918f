"""Neighbours removed from stamps (``legato.io.deblend``) on small seeded synthetic stamps."""

import numpy as np
import pytest

from legato.io.deblend import deblend, neighbour_pixels
from legato.io.stamp_checks import BLEND_BIN, blend_measurements

SIZE, CENTRE, SIGMA = 64, 32, 0.01


def blob(flux: float, y: float, x: float, radius: float = 2.5, q: float = 1.0) -> np.ndarray:
    """A noiseless exponential galaxy of total ``flux`` at ``(y, x)``, axis ratio ``q`` (major axis along x)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot((yy - y) / q, xx - x)
    image = np.exp(-r / radius)
    return (flux * image / image.sum()).astype(np.float32)


def noise(seed: int) -> np.ndarray:
    return (SIGMA * np.random.default_rng(seed).standard_normal((SIZE, SIZE))).astype(np.float32)


TARGET = blob(20.0, CENTRE, CENTRE, q=0.6)
NEIGHBOUR = blob(30.0, CENTRE + 10, CENTRE - 12, radius=2.0)


def test_the_neighbour_map_covers_the_neighbour_and_not_the_target():
    stamp = (TARGET + NEIGHBOUR + noise(1))[None]
    fraction, blended, neighbour_map = blend_measurements(stamp, with_map=True)
    assert neighbour_map.shape == (1, SIZE // BLEND_BIN, SIZE // BLEND_BIN) and neighbour_map.dtype == bool
    assert neighbour_map[0, (CENTRE + 10) // BLEND_BIN, (CENTRE - 12) // BLEND_BIN]
    assert not neighbour_map[0, CENTRE // BLEND_BIN, CENTRE // BLEND_BIN]
    # the map changes nothing the detector reported before
    assert np.array_equal(blend_measurements(stamp)[0], fraction, equal_nan=True) and blend_measurements(stamp)[1] == blended


def test_an_isolated_stamp_has_an_empty_map_and_is_left_unchanged():
    stamps = np.stack([TARGET + noise(seed) for seed in range(4)])
    _, _, neighbour_map = blend_measurements(stamps, with_map=True)
    assert not neighbour_map.any()
    mask = neighbour_pixels(neighbour_map, SIZE)
    assert np.array_equal(deblend(stamps, mask), stamps)


def test_deblending_removes_the_neighbour_and_keeps_the_targets_light():
    truth = TARGET + noise(2)
    stamp = (truth + NEIGHBOUR)[None]
    _, _, neighbour_map = blend_measurements(stamp, with_map=True)
    mask = neighbour_pixels(neighbour_map, SIZE, grow_pix=2)
    clean = deblend(stamp, mask)[0]
    assert clean.dtype == np.float32
    # the neighbour's flux is gone; the target's flux (a point-symmetric profile) is kept to within the noise
    assert abs(clean.sum() - TARGET.sum()) < 0.15 * NEIGHBOUR.sum()
    assert abs(clean.sum() - truth.sum()) < 0.05 * TARGET.sum()
    # the unmasked pixels are the stamp's own
    assert np.array_equal(clean[~mask[0]], stamp[0][~mask[0]])


def test_the_fill_depends_on_the_stamp_alone_not_on_its_batch():
    stamps = np.stack([TARGET + NEIGHBOUR + noise(seed) for seed in range(3)])
    _, _, neighbour_map = blend_measurements(stamps, with_map=True)
    mask = neighbour_pixels(neighbour_map, SIZE)
    together = deblend(stamps, mask)
    alone = np.concatenate([deblend(stamps[i : i + 1], mask[i : i + 1]) for i in range(3)])
    assert np.array_equal(together, alone)
    assert not np.array_equal(together[0], together[1])


def test_pixels_whose_mirror_is_masked_or_off_the_stamp_get_sky_noise():
    stamp = noise(3)[None]
    mask = np.zeros_like(stamp, dtype=bool)
    mask[0, 0, :] = True  # row 0's mirror (row 64) is off the stamp
    mask[0, 20:24, 20:24] = mask[0, 41:45, 41:45] = True  # each other's mirrors
    clean = deblend(stamp + 5.0 * mask, mask)[0]
    filled = clean[mask[0]]
    assert np.all(np.abs(filled) < 6 * SIGMA)
    assert filled.std() == pytest.approx(SIGMA, rel=0.35)


def test_growth_is_per_stamp_and_square():
    neighbour_map = np.zeros((2, SIZE // BLEND_BIN, SIZE // BLEND_BIN), dtype=bool)
    neighbour_map[0, 5, 5] = True
    mask = neighbour_pixels(neighbour_map, SIZE, grow_pix=2)
    assert mask[0].sum() == (BLEND_BIN + 4) ** 2 and not mask[1].any()
    assert neighbour_pixels(neighbour_map, SIZE, grow_pix=0)[0].sum() == BLEND_BIN**2


def test_a_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="must both be"):
        deblend(np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE), dtype=bool))


def test_a_peak_split_off_near_the_targets_own_is_flagged_but_not_removed():
    """A second peak inside the target's segment nearer than MAP_MIN_PEAK_DISTANCE_PIX is flagged BLENDED but left in
    the stamp (such splits are mostly noise on flat galaxies); one farther away is removed."""
    from legato.io.stamp_checks import MAP_MIN_PEAK_DISTANCE_PIX

    target = blob(40.0, CENTRE, CENTRE, radius=4.0)
    near, far = (blob(15.0, CENTRE, CENTRE + 5, radius=1.0), blob(20.0, CENTRE, CENTRE + 12, radius=1.2))
    assert 5 < MAP_MIN_PEAK_DISTANCE_PIX < 12
    _, blended, neighbour_map = blend_measurements(np.stack([target + near + noise(5), target + far + noise(5)]), with_map=True)
    assert blended.all()
    assert not neighbour_map[0].any()
    assert neighbour_map[1, CENTRE // BLEND_BIN, (CENTRE + 12) // BLEND_BIN]


@pytest.mark.parametrize("size", [17, 20, 64, 65])
def test_the_vectorised_sky_sigma_is_numpys_median_of_absolute_deviations_bit_for_bit(size):
    """One sort per stamp and a bisection give the float32 values of two ``numpy.median`` calls: odd and even counts,
    ties and signed zeros (rounded pixels), and the whole frame when fewer than 16 unmasked pixels are left."""
    from legato.io.deblend import _sky_sigmas
    from legato.io.stamp_checks import NOISE_FRAME_PIX

    rng = np.random.default_rng(size)
    stamps = rng.normal(0.0, 0.05, (30, size, size)).astype(np.float32)
    stamps[::3] = np.round(stamps[::3], 1)  # ties, and -0.0 beside 0.0
    mask = rng.uniform(size=stamps.shape) < rng.uniform(0.0, 1.0, (30, 1, 1)) ** 0.5
    mask[-1] = True  # no unmasked frame pixel: the whole frame
    frame = np.ones((size, size), dtype=bool)
    frame[NOISE_FRAME_PIX:-NOISE_FRAME_PIX, NOISE_FRAME_PIX:-NOISE_FRAME_PIX] = False
    expected = []
    for stamp, masked in zip(stamps, mask):
        values = stamp[frame & ~masked] if (frame & ~masked).sum() >= 16 else stamp[frame]
        expected.append(float(1.4826 * np.median(np.abs(values - np.median(values)))))
    got = _sky_sigmas(stamps, mask)
    assert np.array_equal(got, np.array(expected)) and not np.signbit(got).any()


@pytest.mark.parametrize("grow_pix", [1, 2, 3])
def test_growth_by_shifts_is_scipys_square_dilation(grow_pix):
    from scipy import ndimage

    neighbour_map = np.random.default_rng(grow_pix).uniform(size=(5, 32, 32)) < 0.03
    neighbour_map[0] = False
    for size in (64, 65):
        mask = neighbour_pixels(neighbour_map, size, grow_pix=0)
        structure = np.zeros((1, 2 * grow_pix + 1, 2 * grow_pix + 1), dtype=bool)
        structure[0] = True
        assert np.array_equal(neighbour_pixels(neighbour_map, size, grow_pix), ndimage.binary_dilation(mask, structure=structure))
