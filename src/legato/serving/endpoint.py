"""legato's ``/invocations`` endpoint inside ``mlflow models serve`` (installed by :mod:`legato.serving.scoring_hook`).

Requests are ``Content-Type: application/json`` bodies ``{"inputs": N x 64 x 64}``
(or ``"instances"``; one 64 x 64 stamp, or stamps flattened to 4,096 values,
also work) of raw pixel values in electrons/s, with optional ``"params"``: the
stamps' ``band`` (default F160W), ``zeropoint``, or their PSF as
``psf_fwhm_arcsec`` and ``psf_r50_arcsec`` (a PSF-conditioned estimator;
:func:`legato.serving.pyfunc.request_psf`), and ``symmetries`` (1-8: each stamp
measured in that many of its flips/rotations, averaged, as ``legato predict
--symmetries``; a model logged by legato 2026-12-07 or later). Answers:

- 200 ``{"predictions": [{"mag": ..., ..., "flags": ...}, ...]}``, one row per
  stamp, as ``legato predict`` writes it; an unmeasurable row (NaN/inf or
  non-physical pixels, a blank or source-less stamp) is flagged and carries
  ``NaN`` values (Python's JSON dialect, as MLflow writes them);
- 413 when the body is larger than the limit (``Content-Length`` is checked
  before the body is parsed: a body up to twice the limit is read and dropped,
  so that any client reads the answer, a larger one is not read at all) or the
  batch has more stamps than ``LEGATO_MAX_BATCH``;
- 415 for another content type; 400 for anything else malformed (invalid,
  truncated or too deeply nested JSON, booleans, strings or nulls as pixels, a
  wrong shape, an empty batch).

Every error is one JSON line ``{"error_code": ..., "message": ...}``, never a
traceback. JSON is decoded with ``orjson`` (a dependency of DVC; Python's
``json`` otherwise, and for bodies with ``NaN``/``Infinity`` pixels).

A worker answers one request at a time, in its event loop (the pre-fork model
of ``mlflow models serve -w N``): while it computes, it accepts no connection,
so new requests go to an idle worker, and no thread hand-off or GIL contention
adds latency. Measured on 2 cores with 8 clients, answering in a thread
(``asyncio.to_thread``, as MLflow does) gave the same median and a 5x longer
99th percentile.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from legato.errors import LegatoError

try:
    import orjson
except ImportError:  # pragma: no cover - orjson comes with DVC on CPython
    orjson = None

#: JSON bytes one float32 pixel may take as Python writes it (``-1.2345678761601448e-05, ``)
BYTES_PER_PIXEL = 26
INPUT_KEYS = ("inputs", "instances")
#: a refused body up to this many times the limit is read (and dropped) before the 413; a larger one is not read at all
DRAIN_FACTOR = 2
REQUEST_FORMAT = '{"inputs": [N x 64 x 64 pixel values, electrons/s], "params": {"band": "F160W"} (optional)}'

logger = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the server refuses: HTTP status, MLflow-style error code and a one-line message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def max_body_bytes(max_batch: int, stamp_size: int) -> int:
    """Largest request body: ``LEGATO_MAX_BODY_BYTES``, else what ``max_batch`` stamps take in JSON (plus 64 KiB)."""
    value = os.environ.get("LEGATO_MAX_BODY_BYTES", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max_batch * stamp_size * stamp_size * BYTES_PER_PIXEL + 65536


def parse_json(body: bytes):
    """The decoded body; :class:`RequestError` (400) for invalid, truncated or too deeply nested JSON."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            error = exc
        if b"NaN" not in body and b"Infinity" not in body:
            raise RequestError(400, "BAD_REQUEST", f"invalid JSON: {_first_line(error)}")
    try:  # Python's dialect: NaN and Infinity pixels are flagged rows, not errors
        return json.loads(body)
    except RecursionError:
        raise RequestError(400, "BAD_REQUEST", "invalid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "BAD_REQUEST", f"invalid JSON: {_first_line(exc)}") from None


def decode_request(body: bytes, stamp_size: int, max_batch: int) -> tuple[np.ndarray, dict]:
    """The stamps of a request body as an array (shape and dtype are checked by the model) and its parameters.

    Raises
    ------
    RequestError
        For a body that is not ``{"inputs": [...], "params": {...}}``, holds booleans or
        non-rectangular arrays (400), or more than ``max_batch`` stamps (413).
    """
    if not body.strip():
        raise RequestError(400, "BAD_REQUEST", f"empty body: send {REQUEST_FORMAT}")
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestError(400, "BAD_REQUEST", f"the body must be a JSON object {REQUEST_FORMAT}, got {_json_type(payload)}")
    keys = [key for key in INPUT_KEYS if key in payload]
    others = sorted(set(payload) - set(INPUT_KEYS) - {"params"})
    if len(keys) != 1 or others:
        raise RequestError(
            400, "BAD_REQUEST", f"the body must hold exactly one key inputs or instances (and optional params); got {sorted(payload)}"
        )
    params = payload.get("params") or {}
    if not isinstance(params, dict):
        raise RequestError(400, "BAD_REQUEST", f'"params" must be an object such as {{"band": "F125W"}}, got {_json_type(params)}')
    data = payload[keys[0]]
    if not isinstance(data, list):
        raise RequestError(400, "BAD_REQUEST", f'"{keys[0]}" must be an array of stamps, got {_json_type(data)}')
    count = batch_length(data, stamp_size)
    if count == 0:
        raise RequestError(400, "BAD_REQUEST", "empty batch: send at least one stamp")
    if count > max_batch:
        raise RequestError(413, "REQUEST_LIMIT_EXCEEDED", f"batch of {count} stamps exceeds the limit of {max_batch}; split it")
    if may_hold_literals(body) and contains_bool(data):
        raise RequestError(400, "BAD_REQUEST", "pixels must be numbers, got booleans")
    try:
        return np.asarray(data), params
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(
            400, "BAD_REQUEST", f"stamps must form an (N, {stamp_size}, {stamp_size}) array of numbers: {_first_line(exc)}"
        ) from None


def batch_length(data: list, stamp_size: int) -> int:
    """Stamps in a decoded array, before converting it: N of ``(N, H, W)`` or ``(N, H * W)``, else 1 (one stamp)."""
    first = data[0] if data else None
    if isinstance(first, list) and first and (isinstance(first[0], list) or len(first) == stamp_size * stamp_size):
        return len(data)
    return 1 if data else 0


def may_hold_literals(body: bytes) -> bool:
    """Whether a body may hold ``true``, ``false`` or ``null`` after its key (a byte search: ~50x faster than a parse).

    Numbers, ``NaN``, ``Infinity`` and brackets never contain ``u`` or ``l``;
    ``true`` and ``null`` hold a ``u``, ``false`` an ``l``.
    """
    start = body.find(b":")
    return body.find(b"u", start) >= 0 or body.find(b"l", start) >= 0


def contains_bool(value) -> bool:
    """Whether a decoded JSON value holds ``true`` or ``false`` anywhere (NumPy would read them as 1 and 0)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if item is True or item is False:
            return True
        if isinstance(item, list):
            pending.extend(item)
    return False


def encode_rows(rows: dict[str, np.ndarray]) -> bytes:
    """``{"predictions": [row, ...]}``, MLflow's records layout (NaN written as ``NaN``)."""
    names = list(rows)
    columns = [np.asarray(rows[name]).tolist() for name in names]
    return json.dumps({"predictions": [dict(zip(names, values)) for values in zip(*columns)]}).encode()


def error_body(code: str, message: str) -> bytes:
    """One JSON line ``{"error_code": ..., "message": ...}``, as MLflow writes its errors."""
    return json.dumps({"error_code": code, "message": message}).encode()


def invocations_endpoint(rows: Callable[[np.ndarray, dict], dict], stamp_size: int, max_batch: int, max_body: int | None = None):
    """The ``/invocations`` coroutine for a model whose rows come from ``rows(stamps, params)``.

    Parameters
    ----------
    rows : callable
        Stamps array and request parameters -> value columns and ``flags``
        (:meth:`legato.serving.pyfunc.SersicEstimator.rows`); raises
        :class:`~legato.errors.LegatoError` for a bad shape, dtype, count or parameter.
    stamp_size : int
        Stamp side, pixels.
    max_batch : int
        Most stamps per request.
    max_body : int, optional
        Largest body in bytes (default :func:`max_body_bytes`).
    """
    limit = max_body or max_body_bytes(max_batch, stamp_size)

    def answer(body: bytes) -> tuple[int, bytes]:
        try:
            return 200, encode_rows(rows(*decode_request(body, stamp_size, max_batch)))
        except RequestError as exc:
            return exc.status, error_body(exc.code, exc.message)
        except LegatoError as exc:
            return 400, error_body("INVALID_PARAMETER_VALUE", _first_line(exc))
        except Exception:  # noqa: BLE001 - logged for the operator; the client gets one line
            logger.exception("unexpected error while answering /invocations")
            return 500, error_body("INTERNAL_ERROR", "unexpected server error while predicting; see the server log")

    async def invocations(request: Request) -> Response:
        try:
            check_content_type(request.headers.get("content-type", ""))
            body = await read_body(request, limit, max_batch)
        except RequestError as exc:
            return Response(error_body(exc.code, exc.message), status_code=exc.status, media_type="application/json")
        status, content = answer(body)  # in the event loop: see the module docstring
        return Response(content, status_code=status, media_type="application/json")

    return invocations


def check_content_type(content_type: str) -> None:
    """:class:`RequestError` (415) unless ``application/json`` in UTF-8."""
    mime, _, parameters = content_type.partition(";")
    charset = parameters.partition("charset=")[2].strip().strip('"').lower() or "utf-8"
    if mime.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        raise RequestError(
            415, "UNSUPPORTED_MEDIA_TYPE", f"send Content-Type: application/json (UTF-8) with {REQUEST_FORMAT}; got {content_type!r}"
        )


async def read_body(request: Request, limit: int, max_batch: int) -> bytes:
    """The request body, refused (413) from its ``Content-Length`` before reading, or as soon as it passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise RequestError(400, "BAD_REQUEST", f"invalid Content-Length {declared!r}")
    too_large = RequestError(
        413, "REQUEST_LIMIT_EXCEEDED", f"request body larger than {limit} bytes (the size of {max_batch} stamps); split the batch"
    )
    if declared is not None and int(declared) > limit:
        if int(declared) <= DRAIN_FACTOR * limit:
            await drain(request)
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            if size <= DRAIN_FACTOR * limit:
                await drain(request)
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def drain(request: Request) -> None:
    """Read the rest of a refused body without keeping it, so that a client that sends it all (and asked
    to close the connection) still reads the 413 instead of a connection reset."""
    async for _ in request.stream():
        pass


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
