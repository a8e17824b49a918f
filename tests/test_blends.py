"""The in-stamp blend detector (``BLENDED`` flag, ``neighbour_fraction``) on small seeded synthetic stamps."""

import numpy as np
import pytest

from legato.flags import BLENDED, StampFlag
from legato.io import stamp_checks
from legato.io.stamp_checks import SOURCE_APERTURE_PIX, aperture_mask, blend_measurements

SIZE, CENTRE, SIGMA = 64, 32, 0.01


def blob(flux: float, y: float, x: float, radius: float = 2.5, profile: str = "exp") -> np.ndarray:
    """A round noiseless galaxy of total ``flux`` at ``(y, x)``: exponential or Gaussian of scale ``radius`` pixels."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - y, xx - x)
    image = np.exp(-r / radius) if profile == "exp" else np.exp(-0.5 * (r / radius) ** 2)
    return (flux * image / image.sum()).astype(np.float32)


def noisy(image: np.ndarray, seed: int) -> np.ndarray:
    return (image + SIGMA * np.random.default_rng(seed).standard_normal(image.shape)).astype(np.float32)


def share(target: np.ndarray, neighbour: np.ndarray) -> float:
    aperture = aperture_mask(SIZE, SOURCE_APERTURE_PIX)
    return float(neighbour[aperture].sum() / (neighbour[aperture].sum() + target[aperture].sum()))


TARGET = blob(20.0, CENTRE, CENTRE)


def test_the_blend_bit_is_a_warning_of_legato_flags():
    assert stamp_checks.BLENDED == BLENDED == int(StampFlag.BLENDED) == 2048
    assert not StampFlag.BLENDED & StampFlag.FAILED_VALIDATION
    bits = stamp_checks.blend_flags(np.array([True, False]))
    assert bits.dtype == np.int32 and bits.tolist() == [2048, 0]


def test_an_isolated_galaxy_is_not_blended():
    stamps = np.stack([noisy(TARGET, seed) for seed in range(8)])
    fraction, blended = blend_measurements(stamps)
    assert fraction.dtype == np.float32 and blended.dtype == bool
    assert not blended.any()
    assert np.all(fraction < 0.01)


def test_a_neighbour_overlapping_the_aperture_is_blended_with_about_its_share():
    neighbour = blob(20.0, CENTRE + 9, CENTRE - 6)
    fraction, blended = blend_measurements(noisy(TARGET + neighbour, 1)[None])
    assert blended[0]
    # measured 0.471-0.480 against the true 0.475 over five noise seeds
    assert fraction[0] == pytest.approx(share(TARGET, neighbour), abs=0.05)


def test_a_separate_neighbour_inside_the_aperture_is_blended():
    neighbour = blob(8.0, CENTRE - 12, CENTRE + 5, radius=1.5)
    fraction, blended = blend_measurements(noisy(TARGET + neighbour, 2)[None])
    # measured 0.305-0.327 against the true 0.271 (the binned aperture's edge, and the target's wing in its segment)
    assert blended[0] and fraction[0] == pytest.approx(share(TARGET, neighbour), abs=0.07)


def test_a_far_neighbour_whose_segment_stays_outside_1_arcsec_is_not_blended():
    neighbour = blob(5.0, CENTRE + 26, CENTRE + 26, radius=1.5)  # 37 pixels away, its segment a few pixels across
    fraction, blended = blend_measurements(noisy(TARGET + neighbour, 3)[None])
    assert not blended[0] and fraction[0] < 0.01


def test_a_clumpy_galaxy_without_a_saddle_is_not_split():
    clumps = blob(12.0, CENTRE, CENTRE - 1.5, radius=2.0) + blob(9.0, CENTRE + 1, CENTRE + 2.0, radius=2.0)
    stamps = np.stack([noisy(clumps, seed) for seed in range(8)])
    fraction, blended = blend_measurements(stamps)
    assert not blended.any() and np.all(fraction < 0.01)


def test_nan_inf_and_constant_stamps_do_not_crash():
    bad = np.stack([noisy(TARGET, 4)] * 5)
    bad[0, 3, 3] = np.nan
    bad[1, 10, 10] = np.inf
    bad[2] = 0.0
    bad[3] = 7.0
    bad[4, 0, 0] = -1e30
    fraction, blended = blend_measurements(np.concatenate([bad, noisy(TARGET, 5)[None]]))
    assert np.isnan(fraction[:5]).all() and not blended[:5].any()
    assert np.isfinite(fraction[5])
    empty_fraction, empty_blended = blend_measurements(np.zeros((0, SIZE, SIZE), np.float32))
    assert empty_fraction.shape == empty_blended.shape == (0,)


def test_a_noiseless_stamp_is_measured():
    fraction, blended = blend_measurements((TARGET + blob(20.0, CENTRE + 10, CENTRE))[None])
    assert blended[0] and 0 < fraction[0] < 1


def test_the_batch_gives_the_per_stamp_results(monkeypatch):
    rng = np.random.default_rng(6)
    stamps = []
    for k in range(12):
        image = TARGET.copy()
        if k % 2:
            image += blob(rng.uniform(5, 30), CENTRE + rng.uniform(-20, 20), CENTRE + rng.uniform(-20, 20))
        stamps.append(noisy(image, 100 + k))
    stamps = np.stack(stamps)
    monkeypatch.setattr(stamp_checks, "BLEND_CHUNK", 5)  # several chunks, one of them short
    fraction, blended = blend_measurements(stamps)
    single = [blend_measurements(stamp[None]) for stamp in stamps]
    np.testing.assert_array_equal(fraction, np.concatenate([f for f, _ in single]))
    np.testing.assert_array_equal(blended, np.concatenate([b for _, b in single]))
    assert blended.any() and not blended.all()


def test_the_fast_binning_and_block_means_keep_the_reference_sums():
    from legato.io.stamp_checks import NOISE_BLOCK_PIX, _binned, source_snr

    rng = np.random.default_rng(5)
    cube = (rng.normal(size=(6, 64, 64)) * rng.uniform(0.01, 100.0, size=(6, 1, 1))).astype(np.float32)
    reference = cube.reshape(6, 32, 2, 32, 2).sum(axis=(2, 4), dtype=np.float32)
    np.testing.assert_array_equal(_binned(cube), reference)  # NumPy's float32 rounding, bit for bit
    means = cube.reshape(6, 16, NOISE_BLOCK_PIX, 16, NOISE_BLOCK_PIX).mean(axis=(2, 4), dtype=np.float64)
    frame = np.ones((16, 16), dtype=bool)
    frame[2:-2, 2:-2] = False
    border = means[:, frame]
    background = np.median(border, axis=1)
    sigma = 1.4826 * np.median(np.abs(border - background[:, None]), axis=1)
    aperture = (np.mgrid[:64, :64] - 32.0) ** 2
    aperture = aperture.sum(axis=0) <= (1.0 / 0.06) ** 2
    flux = (cube * aperture).sum(axis=(1, 2), dtype=np.float64) - background * aperture.sum()
    np.testing.assert_allclose(source_snr(cube), flux / (sigma * NOISE_BLOCK_PIX * np.sqrt(aperture.sum())), rtol=1e-9)
