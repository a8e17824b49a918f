"""The flag bits have one definition, which the import-light stamp checks that Spark ships by value use."""

import pickle

from legato.flags import FLAG_DTYPE, NOT_PREDICTED, StampFlag
from legato.io import stamp_checks


def test_stamp_checks_use_the_flag_bits_of_legato_flags():
    assert stamp_checks.NOT_PREDICTED == int(NOT_PREDICTED)
    assert stamp_checks.FLAG_DTYPE is FLAG_DTYPE
    for name in ("BAD_PIXELS", "OFF_IMAGE", "FAILED_VALIDATION", "BAD_PIXSCALE", "NO_SOURCE", "RESIZED", "BLENDED"):
        assert getattr(stamp_checks, name) == int(StampFlag[name]), name


def test_checks_pickled_by_value_carry_their_bits_without_legato():
    import cloudpickle
    import numpy as np

    cloudpickle.register_pickle_by_value(stamp_checks)
    try:
        payload = cloudpickle.dumps(stamp_checks.check_stamps)
        blends = cloudpickle.dumps(stamp_checks.blend_measurements)
    finally:
        cloudpickle.unregister_pickle_by_value(stamp_checks)
    assert b"legato.flags" not in payload and b"legato.flags" not in blends  # the bits travel as numbers, not as a module
    check = pickle.loads(payload)
    flags = check(np.zeros((1, 64, 64), np.float32), np.zeros(1, np.int32))
    assert flags[0] & int(StampFlag.FAILED_VALIDATION)
    fraction, blended = pickle.loads(blends)(np.zeros((1, 64, 64), np.float32))
    assert np.isnan(fraction[0]) and not blended[0]  # a constant stamp: nothing measured


def test_every_bit_is_distinct_and_a_power_of_two():
    values = [int(f) for f in StampFlag]
    assert len(set(values)) == len(values)
    assert all(v & (v - 1) == 0 for v in values)


def test_the_blend_bit_is_a_warning_not_a_rejection():
    from legato.flags import describe, flag_counts

    assert int(StampFlag.BLENDED) == 2048
    assert not NOT_PREDICTED & StampFlag.BLENDED and not stamp_checks.NOT_PREDICTED & stamp_checks.BLENDED
    assert describe(2048 | 32) == "FAILED_VALIDATION|BLENDED"
    assert flag_counts([2048, 2048 | 16, 0])["BLENDED"] == 2
