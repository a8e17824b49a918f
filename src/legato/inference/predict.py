"""The local streaming path of ``legato predict``: chunks in, resumable parts, one atomic catalogue out.

A background thread reads (and cuts) the next chunk and runs its stamp checks and
blend measurements (:func:`check_chunk`: NumPy, one core) while the network
predicts the current one on every core; memory is bounded by a few chunks
whatever the input size, and finished chunks live on disk as part files
(:mod:`legato.inference.writer`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from legato.columns import OUTPUT_COLUMNS
from legato.conventions import PIXEL_SCALE_ARCSEC
from legato.flags import NOT_PREDICTED, StampFlag, TrainingRange, flag_counts
from legato.inference.writer import PartStore, finalize, output_format, part_table, remove_stale_temporaries, scan_parts
from legato.io import stamp_checks
from legato.io.stamp_inputs import Chunk, StampSource, fingerprint_hash

DEFAULT_CHUNK_SIZE = 4096
DEFAULT_BATCH_SIZE = 256
PART_FORMAT_VERSION = 1


def stamp_flags(stamps: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Input flags completed with the stamp checks (:func:`legato.io.stamp_checks.check_stamps`)."""
    return stamp_checks.check_stamps(stamps, flags)


@dataclass(frozen=True)
class StampChecks:
    """What :func:`check_chunk` measured on a batch of stamps before the network sees it.

    Attributes
    ----------
    flags : numpy.ndarray
        int32 input flags completed with the stamp checks (:func:`stamp_flags`).
    blend : tuple of numpy.ndarray or None
        ``(neighbour_fraction, blended)`` of the predictable rows, and the neighbour map for an estimator that
        deblends (``estimator.measure_blends``, :func:`legato.io.stamp_checks.blend_measurements`), for an
        estimator that reports them; else None.
    """

    flags: np.ndarray
    blend: tuple[np.ndarray, ...] | None

    @property
    def predictable(self) -> np.ndarray:
        """Rows the network measures (no ``NOT_PREDICTED`` flag)."""
        return (self.flags & int(NOT_PREDICTED)) == 0


def check_chunk(estimator, stamps: np.ndarray, flags: np.ndarray) -> StampChecks:
    """The stamp checks of a batch and, when ``estimator.measures_blends``, its blend measurements on the predictable rows.

    Pure NumPy: ``legato predict`` runs it in its reader thread for the next chunk while the network predicts
    the current one.
    """
    checks = StampChecks(stamp_flags(stamps, flags), None)
    rows = checks.predictable
    if getattr(estimator, "measures_blends", False) and rows.any():
        return StampChecks(checks.flags, estimator.measure_blends(stamps if rows.all() else stamps[rows]))
    return checks


def predict_stamps(
    estimator,
    stamps: np.ndarray,
    flags: np.ndarray,
    training_range: TrainingRange | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    psf=None,
    checks: StampChecks | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The catalogue rows of a batch of stamps: float32 value columns and completed int32 flags.

    The one path from stamps to rows, shared by ``legato predict`` and the served
    model (:class:`legato.serving.pyfunc.SersicEstimator`). Rows flagged as not
    predictable (:func:`stamp_flags`, or the estimator's own input checks) get NaN
    values; predictions outside the training range are flagged ``OUT_OF_RANGE``.

    Parameters
    ----------
    estimator : LoadedEstimator
        The networks (``predict`` and ``output_columns``).
    stamps : numpy.ndarray
        ``(N, H, W)`` stamps, electrons/s; NaN/inf pixels are flagged, not refused.
    flags : numpy.ndarray
        ``(N,)`` input flags (e.g. ``RESIZED``), not modified.
    training_range : TrainingRange, optional
        Range for ``OUT_OF_RANGE`` (no check when None).
    batch_size : int
        Stamps per forward pass.
    psf : PsfCondition, optional
        The stamps' PSF and zeropoint (:meth:`LoadedEstimator.psf_condition`; default F160W).
    checks : StampChecks, optional
        :func:`check_chunk` of these stamps and ``flags``, when already run (else run here).
    """
    checks = check_chunk(estimator, stamps, flags) if checks is None else checks
    flags, ok = checks.flags.copy(), checks.predictable
    names = value_columns(estimator)
    columns = {name: np.full(len(flags), np.nan, dtype=np.float32) for name in names}
    if ok.any():
        options = {**({"psf": psf} if psf is not None else {}), **({"blend": checks.blend} if checks.blend is not None else {})}
        predicted = estimator.predict(stamps if ok.all() else stamps[ok], batch_size=batch_size, checked=True, **options)
        for name in names:
            columns[name][ok] = np.asarray(predicted[name], dtype=np.float32)
        if "flags" in predicted:  # the estimator's own input checks
            flags[ok] |= np.asarray(predicted["flags"], dtype=flags.dtype)
    if training_range is not None:
        flags[training_range.outside(columns)] |= StampFlag.OUT_OF_RANGE
    return columns, flags


def predict_chunk(
    estimator,
    chunk: Chunk,
    training_range: TrainingRange | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    psf=None,
    checks: StampChecks | None = None,
):
    """Predictions of one chunk as an output part (``pyarrow.Table``): :func:`predict_stamps` with the chunk's ids."""
    columns, flags = predict_stamps(estimator, chunk.stamps, chunk.flags, training_range, batch_size, psf, checks)
    return part_table(chunk.ids, columns, flags)


def value_columns(estimator) -> tuple[str, ...]:
    """The float columns an estimator writes (its ``output_columns`` without ``flags``)."""
    return tuple(name for name in getattr(estimator, "output_columns", OUTPUT_COLUMNS) if name != "flags")


def prefetch(iterator: Iterator, depth: int = 2, meanwhile: Callable[[], None] | None = None) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead (exceptions are re-raised here).

    ``meanwhile`` runs here once the thread has started, before the first item is awaited (``legato
    predict`` builds the networks' graphs while the first chunk is read and checked).
    """
    if depth < 1:
        if meanwhile is not None:
            meanwhile()
        yield from iterator
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(("done", done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(("error", exc))

    thread = threading.Thread(target=produce, name="legato-prefetch", daemon=True)
    thread.start()
    try:
        if meanwhile is not None:
            meanwhile()
        while True:
            kind, item = items.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def run_fingerprint(source: StampSource, model, chunk_size: int, columns: tuple[str, ...] = OUTPUT_COLUMNS, psf=None) -> tuple[str, dict]:
    """Hash (and description) of what makes part files reusable: input, model, PSF, chunk size, output columns."""
    description = {
        **({"psf": psf.as_dict()} if psf is not None else {}),
        "input": source.fingerprint(),
        "model": model.fingerprint(),
        "columns": list(columns),
        "chunk_size": chunk_size,
        "stamp_size": source.stamp_size,
        "part_format": PART_FORMAT_VERSION,
    }
    return fingerprint_hash(description), description


def predict_catalogue(
    source: StampSource,
    model,
    output: str | Path,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    training_range: TrainingRange | None = None,
    progress: bool = True,
    prefetch_depth: int = 2,
    on_chunk: Callable[[int], None] | None = None,
    estimator=None,
    psf=None,
) -> dict:
    """Predict every stamp of ``source`` into the catalogue ``output``.

    Parameters
    ----------
    source : StampSource
        The input reader (:func:`legato.io.stamp_inputs.open_source`).
    model : ResolvedModel
        The model (:func:`legato.registry.resolve.resolve_model`).
    output : str or Path
        Catalogue to write; ``.fits``, ``.ecsv`` or ``.parquet``.
    chunk_size : int
        Rows per chunk (and per resumable part).
    batch_size : int
        Stamps per forward pass.
    training_range : TrainingRange, optional
        Range for the ``OUT_OF_RANGE`` flag (no check when None).
    progress : bool
        Show a progress bar on stderr.
    prefetch_depth : int
        Chunks read ahead by the background reader (0: no thread).
    on_chunk : callable, optional
        Called with the chunk index after each part is on disk (tests use it to
        interrupt a run).
    estimator : LoadedEstimator, optional
        An already loaded estimator (default: ``model.load()``), e.g. one wrapped in
        :class:`legato.inference.bounds.BoundEstimator` for ``--crb``.
    psf : PsfCondition, optional
        The stamps' band, PSF and zeropoint (``legato predict --band / --psf``; default F160W),
        recorded in the catalogue's metadata (and, for a PSF-conditioned estimator, in every row).

    Returns
    -------
    dict
        Run report: rows, predicted rows, flag counts, per-file problems,
        chunks (total and resumed), seconds and stamps/s, model identity.
    """
    output = Path(output)
    fmt = output_format(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    estimator = estimator if estimator is not None else model.load()
    fingerprint, description = run_fingerprint(source, model, chunk_size, value_columns(estimator), psf)
    store = PartStore(output, fingerprint)
    done = store.prepare(description)

    start = time.perf_counter()
    processed = 0
    bar = _progress_bar(source.total, progress)
    if done and source.total:
        bar.update(min(source.total, len(done) * chunk_size))
    try:
        checked = ((chunk, check_chunk(estimator, chunk.stamps, chunk.flags)) for chunk in source.chunks(chunk_size, skip=done))
        warm_up = getattr(estimator, "warm_up", None)
        meanwhile = None if warm_up is None or source.total == 0 else (lambda: warm_up(batch_size))
        for chunk, checks in prefetch(checked, prefetch_depth, meanwhile):
            store.write(chunk.index, predict_chunk(estimator, chunk, training_range, batch_size, psf, checks))
            processed += len(chunk.ids)
            bar.update(len(chunk.ids))
            if on_chunk is not None:
                on_chunk(chunk.index)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    parts = store.parts()
    scan = scan_parts(parts)
    counts = flag_counts(scan["flags"])
    not_predicted = int(np.count_nonzero(scan["flags"] & int(StampFlag.FAILED_VALIDATION)))
    meta = _output_meta(source, model, scan["rows"], counts, training_range, len(source.problems))
    if psf is not None:
        meta.update(psf.meta())
    finalize(parts, output, meta, scan)
    store.remove()
    return {
        "output": str(output),
        "format": fmt,
        "input": str(getattr(source, "path", "")),
        "input_kind": source.kind,
        "rows": scan["rows"],
        "predicted": scan["rows"] - not_predicted,
        "not_predicted": not_predicted,
        "flag_counts": counts,
        "problems": list(source.problems),
        "chunks": len(parts),
        "chunks_resumed": len(done),
        "rows_this_run": processed,
        "seconds": round(seconds, 3),
        "stamps_per_s": round(processed / seconds, 1) if seconds > 0 and processed else None,
        **({"psf": psf.as_dict()} if psf is not None else {}),
        **model.meta(),
    }


def _output_meta(source, model, rows: int, counts: dict, training_range, n_problems: int) -> dict:
    import legato

    meta = {
        **model.meta(),
        "input": str(getattr(source, "path", "")),
        "input_kind": source.kind,
        "rows": rows,
        "stamp_size": source.stamp_size,
        "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC,
        "files_skipped": n_problems,
        "flag_bits": ",".join(f"{f.name}={int(f)}" for f in StampFlag),
        "legato_version": getattr(legato, "__version__", ""),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    meta.update({f"n_flag_{name.lower()}": count for name, count in counts.items()})
    if training_range is not None:
        meta.update({f"train_range_{k}": " ".join(f"{v:g}" for v in lims) for k, lims in training_range.as_meta().items()})
    return meta


def _progress_bar(total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="stamp", desc="predict", disable=not enabled, smoothing=0.1, mininterval=0.5)
