"""The serving endpoint's pieces without a server: the MLflow hook's assumptions, request decoding, stamp checks.

The real `mlflow models serve` answers the same cases in tests/test_registry_and_serving.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from legato.flags import StampFlag
from legato.io import stamp_checks


def test_mlflow_scoring_server_is_the_one_the_hook_was_written_for():
    """Fails when an MLflow release changes what legato.serving.scoring_hook relies on: update the hook, then SUPPORTED_MLFLOW."""
    from legato.serving import scoring_hook

    assert scoring_hook.compatibility_problems() == []
    assert not scoring_hook.in_scoring_server()  # only while MLflow's app module loads a model


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "empty body"),
        (b"   ", 400, "empty body"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"inputs": [[[0.1, 0.2', 400, "invalid JSON"),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid JSON"),
        (b'{"inputs": [[[NaN, 1' + b"[" * 100_000, 400, "invalid JSON"),  # Python's json fallback: nested too deeply
        (b'{"inputs": [[[1.0]]], "extra": {}}', 400, "exactly one key"),
        (b'{"inputs": [[[1.0]]], "params": [1]}', 400, '"params" must be an object'),
        (b'{"dataframe_split": {}}', 400, "exactly one key"),
        (b'{"inputs": 3}', 400, "must be an array"),
        (b'{"inputs": []}', 400, "empty batch"),
        (b'{"inputs": [[[true, 0.5]]]}', 400, "booleans"),
        (b'{"instances": [[[0.5, false]]]}', 400, "booleans"),
        (b'{"inputs": [[1.0, 2.0], [3.0]]}', 400, "array of numbers"),
        (json.dumps({"inputs": np.zeros((9, 64, 64)).tolist()}).encode(), 413, "exceeds the limit of 8"),
    ],
)
def test_malformed_bodies_are_refused_with_a_status_and_one_line(body, status, message):
    from legato.serving.endpoint import RequestError, decode_request

    with pytest.raises(RequestError) as caught:
        decode_request(body, 64, 8)
    assert caught.value.status == status and message in caught.value.message and "\n" not in caught.value.message


def test_valid_bodies_decode_to_arrays_nan_included():
    from legato.serving.endpoint import decode_request, may_hold_literals

    cube, params = decode_request(json.dumps({"inputs": np.zeros((2, 64, 64)).tolist()}).encode(), 64, 8)
    assert cube.shape == (2, 64, 64) and params == {}
    flat, params = decode_request(json.dumps({"instances": np.zeros((8, 64 * 64)).tolist(), "params": {"band": "F125W"}}).encode(), 64, 8)
    assert flat.shape == (8, 4096) and params == {"band": "F125W"}  # 8 flattened stamps: within the limit
    one, _ = decode_request(b'{"inputs": [[NaN, Infinity], [-Infinity, 1e-05]]}', 64, 8)
    assert np.isnan(one[0, 0]) and np.isinf(one[0, 1])  # Python's JSON dialect: flagged rows, not errors
    assert not may_hold_literals(b'{"inputs": [[1e-05, NaN, -Infinity, 2E+3]]}')
    assert may_hold_literals(b'{"inputs": [[null]]}') and may_hold_literals(b'{"inputs": [[false]]}')


def test_body_limit_follows_the_batch_limit(monkeypatch):
    from legato.serving.endpoint import BYTES_PER_PIXEL, max_body_bytes

    assert max_body_bytes(4096, 64) > 4096 * 64 * 64 * 24  # 4,096 full-precision stamps fit
    longest = json.dumps([-1.2345678761601448e-05]).encode()
    assert len(longest) - 2 + len(b", ") <= BYTES_PER_PIXEL
    monkeypatch.setenv("LEGATO_MAX_BODY_BYTES", "1000")
    assert max_body_bytes(4096, 64) == 1000


def test_stamp_checks_flag_blank_non_physical_and_source_less_stamps(tiny_sim):
    from legato.io.stamps import read_stamp_set

    galaxies, _, _ = read_stamp_set(tiny_sim / "test")
    assert not stamp_checks.check_stamps(galaxies, np.zeros(len(galaxies))).any()
    rng = np.random.default_rng(0)
    sentinel = galaxies[0].copy()
    sentinel[:3] = -1e30  # masked rows filled with a sentinel
    stamps = np.stack([np.zeros((64, 64)), np.full((64, 64), -1e30), sentinel, rng.normal(0.0, 0.0087, (64, 64))]).astype(np.float32)
    flags = stamp_checks.check_stamps(stamps, np.zeros(4))
    assert flags[0] == StampFlag.FAILED_VALIDATION
    assert flags[1] == flags[2] == StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION
    assert flags[3] == StampFlag.NO_SOURCE | StampFlag.FAILED_VALIDATION
    noise = rng.normal(0.0, 0.0087, (400, 64, 64))
    assert (stamp_checks.check_stamps(noise, np.zeros(400)) & StampFlag.NO_SOURCE).mean() > 0.95


def test_server_workers_share_the_cores_among_tensorflow_and_blas_threads(monkeypatch):
    """Each worker gets cores // workers threads for TensorFlow and NumPy's BLAS alike (no oversubscription)."""
    import os

    from legato.serving.server import serving_environment

    for key in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    env = serving_environment(workers=2)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "2"
    assert env["TF_NUM_INTEROP_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what the caller's environment already sets is kept
    assert "OMP_NUM_THREADS" not in serving_environment(workers=2)
