"""The same catalogue inference on Apache Spark: a local session or a cluster (``spark://``, YARN, Kubernetes).

Input: Parquet stamp shards (``id``, flattened float32 ``stamp`` of
``64 * 64`` values, optional input ``flags``) or a folder of FITS shards (stamp
cubes or single stamps, read on the executors). Output: a Parquet dataset with
the columns of the local path (``id``, the model's value columns, ``flags``).

One pass per Arrow batch (``mapInArrow``): the stamps cross from the JVM to
Python once, as Arrow buffers reshaped without a copy per row; each Python
worker loads the registered model once (from a zip shipped with the job, the
way ``mlflow.pyfunc.spark_udf`` ships it) and runs the served model's own rows
(:meth:`legato.serving.pyfunc.SersicEstimator.rows`: the stamp checks, the
networks, the blend detector, the flags) on each batch. TensorFlow gets the
executor's cores, not the machine's (``TF_NUM_INTRAOP_THREADS``), so executors
sharing a machine do not oversubscribe it.

The output is written beside its final place and moved there when complete
(local paths): an interrupted or failed job leaves no half-written dataset, and
a rerun with the same arguments writes every input row exactly once. A remote
output (``s3a://``, ``hdfs://``) is written in Spark's overwrite mode, whose
commit protocol gives the same guarantee per task.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from legato.conventions import DEFAULT_STAMP_SIZE, PIXEL_SCALE_ARCSEC
from legato.errors import ConfigError, DataError
from legato.flags import StampFlag
from legato.io import stamp_checks

#: stamps per Arrow batch handed to a Python worker (one forward-pass series; the model refuses > 4,096)
ARROW_BATCH = 1024
SPARK_CONF = {
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH),
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # the JVM's Parquet reader decodes this many rows at a time: 4,096 stamps (its default) are 64 MiB a column
    "spark.sql.parquet.columnarReaderBatchSize": str(ARROW_BATCH),
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "2g",
    "spark.executor.memory": "2g",
    "spark.task.maxFailures": "4",
}
_WORKER_MODELS: dict[str, object] = {}  # per Python worker: the loaded models, by shipped archive


def spark_session(master: str | None = "local[2]", app_name: str = "legato-predict", conf: dict | None = None):
    """A Spark session whose Python workers run this interpreter (the project's environment).

    Parameters
    ----------
    master : str or None
        ``local[N]`` on one machine; a cluster URL (``spark://host:7077``, ``yarn``,
        ``k8s://...``) at survey scale, or None to keep the one ``spark-submit`` set.
    app_name : str
        The application's name in the cluster's UI.
    conf : dict, optional
        Extra Spark settings (over :data:`SPARK_CONF` and the thread settings of
        :func:`executor_threads`).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("the Spark engine needs pyspark: pip install pyspark") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = {**SPARK_CONF, **(conf or {})}
    threads = executor_threads(master, settings)
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        settings.setdefault(f"spark.executorEnv.{name}", str(threads))
    settings.setdefault("spark.executorEnv.TF_NUM_INTEROP_THREADS", "1")
    settings.setdefault("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def executor_threads(master: str | None, conf: dict) -> int:
    """Threads one task's TensorFlow may use: ``spark.task.cpus`` (1 by default), never the machine's cores.

    Every concurrent task of an executor runs in its own Python worker, so a
    task that took all the machine's cores would oversubscribe them as soon as
    two tasks run (``local[2]``, or two 1-core workers on one machine).
    """
    try:
        return max(1, int(conf.get("spark.task.cpus", 1)))
    except (TypeError, ValueError):
        raise ConfigError(f"spark.task.cpus must be a whole number, got {conf.get('spark.task.cpus')!r}") from None


#: stamps per Spark task reading local Parquet shards: a row group is split into tasks of about this many
#: rows (about 12 s of one core), so that work balances over the executors and a lost executor costs little
TASK_ROWS = 10240
_ARROW_TO_SPARK_ID = {"int64": "bigint", "int32": "int", "string": "string", "large_string": "string"}


def plan_inputs(spark, path: str | Path, stamp_size: int = DEFAULT_STAMP_SIZE):
    """The tasks of an input and how the executors read them: ``(tasks, kind, id_type)``.

    - Local Parquet shards (a file or a folder): one task per ``TASK_ROWS`` rows of a row
      group, read on the executor with pyarrow (``kind="parquet"``); the JVM never decodes
      the stamps, it schedules and retries the tasks.
    - FITS shards (a folder of FITS files or one file): one task per group of files, read on
      the executors (``kind="fits"``); unreadable files are skipped (the local path lists them).
    - A remote Parquet dataset (``s3a://``, ``hdfs://``): Spark's own reader (``kind="rows"``).

    Raises
    ------
    DataError
        On a missing input, a Parquet file that cannot be read or lacks ``id`` / ``stamp``, or
        shards whose ids differ in type.
    """
    if "://" in str(path):
        frame = _parquet_rows(spark.read.parquet(str(path)), path)
        return frame, "rows", frame.schema["id"].dataType.simpleString()
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    fits_files = (
        sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(stamp_checks.FITS_SUFFIXES))
        if path.is_dir()
        else ([path] if path.name.lower().endswith(stamp_checks.FITS_SUFFIXES) else [])
    )
    if fits_files:
        names = [str(p.resolve()) for p in fits_files]
        slices = max(1, min(len(names), spark.sparkContext.defaultParallelism * 4))
        tasks = spark.createDataFrame(spark.sparkContext.parallelize([(n,) for n in names], slices), "path string")
        return tasks, "fits", "string"
    rows, id_type = parquet_tasks(path)
    schema = "path string, row_group int, first_batch int, batches int"
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))), schema), "parquet", id_type


def parquet_tasks(path: Path, task_rows: int = TASK_ROWS, batch_rows: int = ARROW_BATCH) -> tuple[list[tuple], str]:
    """Tasks ``(file, row group, first batch, batches)`` of local Parquet shards, and the Spark type of their ids."""
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    if not files:
        raise DataError(f"no Parquet or FITS stamps in {path}")
    tasks, id_types = [], set()
    for file in files:
        try:
            meta = pq.ParquetFile(file)
        except Exception as exc:  # noqa: BLE001 - any reader error is one line
            raise DataError(f"cannot read Parquet file {file}: {str(exc).splitlines()[0]}") from None
        schema = meta.schema_arrow
        missing = {"id", "stamp"} - set(schema.names)
        if missing:
            raise DataError(f"Parquet stamps in {file} lack column(s) {', '.join(sorted(missing))}")
        id_type = _ARROW_TO_SPARK_ID.get(str(schema.field("id").type))
        if id_type is None:
            raise DataError(f"the id column of {file} is {schema.field('id').type}: give integer or string ids")
        id_types.add(id_type)
        for group in range(meta.num_row_groups):
            batches = -(-meta.metadata.row_group(group).num_rows // batch_rows)
            per_task = max(1, task_rows // batch_rows)
            tasks += [(str(file.resolve()), group, first, min(per_task, batches - first)) for first in range(0, batches, per_task)]
    if len(id_types) > 1:
        raise DataError(f"the shards in {path} mix id types ({', '.join(sorted(id_types))}): give one type")
    return tasks, id_types.pop()


def parquet_batches(path: str, row_group: int, first_batch: int, batches: int, batch_rows: int = ARROW_BATCH):
    """``(ids, stamps, flags)`` of batches ``first_batch ..`` of one row group of a Parquet shard (on an executor)."""
    import numpy as np
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    columns = [name for name in ("id", "stamp", "flags") if name in file.schema_arrow.names]
    for index, batch in enumerate(file.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns)):
        if index >= first_batch + batches:
            break
        if index >= first_batch:
            flags = (
                batch.column("flags").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)
                if "flags" in columns
                else np.zeros(batch.num_rows, dtype=np.int32)
            )
            yield batch.column("id"), batch.column("stamp"), flags


def fits_batches(path: str, stamp_size: int, batch_rows: int = ARROW_BATCH):
    """``(ids, stamps, flags)`` of one FITS shard (on an executor); nothing for an unreadable file."""
    import pyarrow as pa

    try:
        ids, stamps, flags = stamp_checks.read_fits_stamps(path, stamp_size, PIXEL_SCALE_ARCSEC)
    except Exception:  # noqa: BLE001 - corrupt files are skipped, as the local path skips them
        return
    for start in range(0, len(ids), batch_rows):
        part = slice(start, start + batch_rows)
        yield pa.array([str(i) for i in ids[part]], type=pa.string()), stamps[part], flags[part]


def row_batches(batch):
    """``(ids, stamps, flags)`` of a batch of Spark's own Parquet rows."""
    import numpy as np

    yield batch.column("id"), batch.column("stamp"), batch.column("flags").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)


def input_batches(kind: str, batch, stamp_size: int):
    """The stamp batches of one batch of tasks (:func:`plan_inputs`'s ``kind``)."""
    if kind == "rows":
        yield from row_batches(batch)
        return
    tasks = batch.to_pylist()
    for task in tasks:
        if kind == "parquet":
            yield from parquet_batches(task["path"], task["row_group"], task["first_batch"], task["batches"])
        else:
            yield from fits_batches(task["path"], stamp_size)


def _parquet_rows(frame, path):
    from pyspark.sql import functions as F

    missing = {"id", "stamp"} - set(frame.columns)
    if missing:
        raise DataError(f"Parquet stamps at {path} lack column(s) {', '.join(sorted(missing))}")
    flags = F.col("flags").cast("int") if "flags" in frame.columns else F.lit(0)
    return frame.select("id", F.col("stamp").cast("array<float>").alias("stamp"), flags.alias("flags"))


def model_value_columns(model_path: str | Path) -> list[str]:
    """The value columns of a model's output signature (every output but ``flags``)."""
    from mlflow.models import Model

    from legato.columns import OUTPUT_COLUMNS

    signature = Model.load(str(model_path)).signature
    names = signature.outputs.input_names() if signature is not None and signature.outputs is not None else list(OUTPUT_COLUMNS)
    return [n for n in names if n != "flags"]


def ship_model(spark, model_uri: str, workdir: Path) -> tuple[Path, str]:
    """Download a pyfunc model on the driver, zip it and add the zip to the job's files.

    Returns the local model folder and the archive's file name, which the
    executors fetch with ``SparkFiles.get`` (no tracking store needed there).
    """
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(workdir / "model")))
    except Exception as exc:  # noqa: BLE001 - any store error becomes one line
        raise ConfigError(f"cannot fetch model {model_uri}: {str(exc).splitlines()[0]}") from None
    if not (local / "MLmodel").is_file():
        raise ConfigError(f"{model_uri} is not an MLflow model (no MLmodel file)")
    tag = hashlib.sha1(f"{model_uri}:{uuid.uuid4().hex}".encode()).hexdigest()[:12]
    archive = shutil.make_archive(str(workdir / f"legato-model-{tag}"), "zip", local)
    spark.sparkContext.addFile(archive)
    return local, Path(archive).name


def worker_model(archive_name: str):
    """The python model of a shipped archive, loaded once per Python worker (cached by archive name)."""
    model = _WORKER_MODELS.get(archive_name)
    if model is None:
        import zipfile

        import mlflow.pyfunc
        from pyspark import SparkFiles

        target = Path(tempfile.mkdtemp(prefix="legato-model-"))
        with zipfile.ZipFile(SparkFiles.get(archive_name)) as archive:
            archive.extractall(target)
        model = mlflow.pyfunc.load_model(str(target)).unwrap_python_model()
        _WORKER_MODELS.clear()  # one job's model at a time per worker
        _WORKER_MODELS[archive_name] = model
    return model


def predict_batch(model, ids, stamps, flags, stamp_size: int, params: dict | None, training_range, values: list[str], symmetries: int = 1):
    """One batch of stamps to its output record batch: the served model's rows (checks, networks, flags).

    ``stamps`` is an Arrow list array of flattened stamps (reshaped from its buffer, no
    per-row copy; rows of a wrong length become zero stamps flagged ``FAILED_VALIDATION``)
    or a cube ``(n, size, size)``. ``symmetries``: flips/rotations averaged per stamp (as ``legato predict --symmetries``).
    """
    import numpy as np
    import pyarrow as pa

    cube = stamps if isinstance(stamps, np.ndarray) else stamp_checks.flat_to_stamps(stamps, stamp_size, flags)
    rows = model.rows(cube, params, flags=flags, training_range=training_range, symmetries=symmetries)
    arrays = [ids] + [pa.array(np.asarray(rows[name], dtype=np.float32)) for name in values]
    arrays.append(pa.array(np.asarray(rows["flags"], dtype=np.int32)))
    return pa.RecordBatch.from_arrays(arrays, names=["id", *values, "flags"])


def predict_spark(
    spark,
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    training_range=None,
    stamp_size: int = DEFAULT_STAMP_SIZE,
    params: dict | None = None,
    symmetries: int = 1,
) -> dict:
    """Predict Parquet/FITS stamp shards with a registered model on Spark; write a Parquet dataset.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session (:func:`spark_session`).
    model_uri : str
        A pyfunc model URI (``models:/legato-sersic@champion``) or a saved-model path.
    input_path, output_path : str or Path
        Stamp shards in; the Parquet dataset (a folder, replaced when complete) out.
    training_range : TrainingRange, optional
        Range for the ``OUT_OF_RANGE`` flag (default: the model's own).
    stamp_size : int
        Stamp side, pixels.
    params : dict, optional
        The model's request parameters (a PSF-conditioned model's ``band``, ``zeropoint``,
        ``psf_fwhm_arcsec``, ``psf_r50_arcsec``: :func:`legato.serving.pyfunc.request_psf`).
    symmetries : int
        Flips/rotations each stamp is measured in, the estimates averaged (1-8; ``legato predict --symmetries``).

    Returns
    -------
    dict
        Rows, flag counts, wall time and the cluster's parallelism.
    """
    from pyspark.sql import functions as F

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="legato-spark-") as workdir:
        local_model, archive = ship_model(spark, model_uri, Path(workdir))
        values = model_value_columns(local_model)
        tasks, kind, id_type = plan_inputs(spark, input_path, stamp_size)
        schema = ", ".join([f"id {id_type}", *[f"{name} float" for name in values], "flags int"])
        size = stamp_size

        def predict_partition(batches):
            model = worker_model(archive)
            for batch in batches:
                for ids, stamps, flags in input_batches(kind, batch, size):
                    yield predict_batch(model, ids, stamps, flags, size, params, training_range, values, symmetries)

        result = tasks.mapInArrow(predict_partition, schema)
        write_parquet(result, output_path)
    seconds = time.perf_counter() - start

    written = spark.read.parquet(str(output_path))
    bits = {flag.name: int(flag) for flag in StampFlag}  # every bit, as flag_counts gives the local engine's
    aggregates = [F.count(F.lit(1)).alias("rows")] + [
        F.sum((F.col("flags").bitwiseAND(F.lit(bit)) != 0).cast("int")).alias(name) for name, bit in bits.items()
    ]
    totals = written.agg(*aggregates).collect()[0].asDict()
    rows = int(totals.pop("rows"))
    counts = {name: int(value or 0) for name, value in totals.items()}
    return {
        "output": str(output_path),
        "engine": "spark",
        "master": spark.sparkContext.master,
        "parallelism": spark.sparkContext.defaultParallelism,
        "model_uri": model_uri,
        "rows": rows,
        "flag_counts": counts,
        "seconds": round(seconds, 3),
        "stamps_per_s": round(rows / seconds, 1) if seconds > 0 else None,
    }


def write_parquet(frame, output_path: str | Path) -> None:
    """Write ``frame`` as a Parquet dataset that appears at ``output_path`` only when complete.

    A local path is written to a sibling ``.NAME.partial`` folder (overwritten by
    a rerun) and moved into place; the previous dataset is removed only then. A
    URI is written in Spark's overwrite mode.
    """
    if "://" in str(output_path):
        frame.write.mode("overwrite").parquet(str(output_path))
        return
    final = Path(output_path).resolve()
    partial = final.with_name(f".{final.name}.partial")
    frame.write.mode("overwrite").parquet(str(partial))
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(retired)
        partial.rename(final)
        if retired.is_dir():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            retired.unlink()
    else:
        partial.rename(final)
