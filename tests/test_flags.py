"""The flag bits have one meaning: legato.flags and the import-free stamp checks Spark ships agree."""

from legato.flags import FLAG_DTYPE, NOT_PREDICTED, StampFlag
from legato.io import stamp_checks


def test_stamp_checks_repeat_the_flag_bits_exactly():
    for flag in StampFlag:
        assert getattr(stamp_checks, flag.name) == int(flag), flag.name
    assert stamp_checks.NOT_PREDICTED == int(NOT_PREDICTED)
    assert stamp_checks.FLAG_DTYPE == FLAG_DTYPE


def test_every_bit_is_distinct_and_a_power_of_two():
    values = [int(f) for f in StampFlag]
    assert len(set(values)) == len(values)
    assert all(v & (v - 1) == 0 for v in values)
