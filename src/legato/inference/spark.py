"""The same catalogue inference on Apache Spark, through ``mlflow.pyfunc.spark_udf``.

Input: Parquet stamp shards (``id``, flattened float32 ``stamp`` of
``64 * 64`` values, optional input ``flags``) or a folder of FITS shards (stamp
cubes or single stamps, read on the executors). Output: a Parquet dataset with
the columns of the local path (``id, mag, re_arcsec, n, q, ellipticity,
flags``). The per-stamp checks are the functions of
:mod:`legato.io.stamp_checks`, shipped by value to the workers, and the model
is the registered pyfunc, so the Spark rows equal the local rows (up to
float32 rounding of the batched forward pass).

Arrow batches are capped at 1,024 rows (``spark.sql.execution.arrow.maxRecordsPerBatch``)
because the pyfunc refuses batches above its serving limit (4,096 stamps).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd

from legato.columns import OUTPUT_COLUMNS
from legato.conventions import DEFAULT_STAMP_SIZE, PIXEL_SCALE_ARCSEC
from legato.errors import ConfigError, DataError
from legato.flags import StampFlag
from legato.io import stamp_checks

SPARK_CONF = {
    "spark.sql.execution.arrow.maxRecordsPerBatch": "1024",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
}


def model_output_columns(model_uri: str) -> tuple[list[str], bool]:
    """Value columns of a logged model's output signature, and whether it returns its own ``flags``."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    names = signature.outputs.input_names() if signature is not None and signature.outputs is not None else list(OUTPUT_COLUMNS)
    return [n for n in names if n != "flags"], "flags" in names


def spark_session(master: str = "local[2]", app_name: str = "legato-predict", conf: dict | None = None):
    """A Spark session whose Python workers run this interpreter (the project's environment).

    Parameters
    ----------
    master : str
        ``local[N]`` here; a cluster URL (``spark://host:7077``, ``yarn``,
        ``k8s://...``) at survey scale, or None to keep the one ``spark-submit`` set.
    conf : dict, optional
        Extra Spark settings (over :data:`SPARK_CONF`).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("the Spark engine needs pyspark: pip install pyspark") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _ship_stamp_checks_by_value() -> None:
    """Pickle :mod:`stamp_checks` by value for the workers (Spark's own vendored cloudpickle and the public one)."""
    import importlib

    for name in ("pyspark.cloudpickle", "cloudpickle"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if stamp_checks.__name__ not in getattr(module, "list_registry_pickle_by_value", lambda: set())():
            module.register_pickle_by_value(stamp_checks)


def read_stamps(spark, path: str | Path, stamp_size: int = DEFAULT_STAMP_SIZE, partitions: int | None = None):
    """A DataFrame ``(id, stamp, flags)`` of Parquet shards or FITS shards.

    FITS shards (a folder of FITS files or one file) are listed on the driver
    and read on the executors; unreadable files are skipped (the local path
    lists them in its report).
    """
    if "://" in str(path):  # a remote dataset (s3a://, hdfs://, ...): Parquet shards
        return _parquet_stamps(spark.read.parquet(str(path)), path)
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    fits_files = (
        sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(stamp_checks.FITS_SUFFIXES))
        if path.is_dir()
        else ([path] if path.name.lower().endswith(stamp_checks.FITS_SUFFIXES) else [])
    )
    if not fits_files:
        return _parquet_stamps(spark.read.parquet(str(path)), path)

    _ship_stamp_checks_by_value()
    size, scale = stamp_size, PIXEL_SCALE_ARCSEC
    read_fits_stamps = stamp_checks.read_fits_stamps

    def read_files(batches):
        for batch in batches:
            for name in batch["path"]:
                try:
                    ids, stamps, flags = read_fits_stamps(name, size, scale)
                except Exception:  # noqa: BLE001 - corrupt files are skipped
                    continue
                yield pd.DataFrame({"id": ids, "stamp": list(stamps.reshape(len(stamps), -1)), "flags": flags})

    files = spark.createDataFrame([(str(p.resolve()),) for p in fits_files], "path string")
    files = files.repartition(partitions or max(1, min(len(fits_files), spark.sparkContext.defaultParallelism * 4)))
    return files.mapInPandas(read_files, "id string, stamp array<float>, flags int")


def _parquet_stamps(frame, path):
    from pyspark.sql import functions as F

    missing = {"id", "stamp"} - set(frame.columns)
    if missing:
        raise DataError(f"Parquet stamps at {path} lack column(s) {', '.join(sorted(missing))}")
    flags = F.col("flags").cast("int") if "flags" in frame.columns else F.lit(0)
    return frame.select("id", "stamp", flags.alias("flags"))


def predict_spark(
    spark,
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    training_range=None,
    stamp_size: int = DEFAULT_STAMP_SIZE,
    params: dict | None = None,
) -> dict:
    """Predict Parquet/FITS stamp shards with a registered model on Spark; write a Parquet dataset.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session (:func:`spark_session`).
    model_uri : str
        A pyfunc model URI (``models:/legato-sersic/3``) or a saved-model path.
    input_path, output_path : str or Path
        Stamp shards in; the Parquet dataset (a folder, overwritten) out.
    training_range : TrainingRange, optional
        Range for the ``OUT_OF_RANGE`` flag.
    stamp_size : int
        Stamp side, pixels.
    params : dict, optional
        The model's request parameters (a PSF-conditioned model's ``band``, ``zeropoint``,
        ``psf_fwhm_arcsec``, ``psf_r50_arcsec``: :func:`legato.serving.pyfunc.request_psf`).

    Returns
    -------
    dict
        Rows, flag counts and wall time.
    """
    import mlflow.pyfunc
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    _ship_stamp_checks_by_value()
    size = stamp_size
    check_stamps, flat_to_stamps = stamp_checks.check_stamps, stamp_checks.flat_to_stamps

    def stamp_flags(stamps: pd.Series, flags: pd.Series) -> pd.Series:
        import numpy as np

        flags = flags.to_numpy(dtype=np.int32, copy=True)
        cube = flat_to_stamps(list(stamps), size, flags)
        return pd.Series(check_stamps(cube, flags))

    start = time.perf_counter()
    frame = read_stamps(spark, input_path, stamp_size)
    frame = frame.withColumn("flags", pandas_udf(stamp_flags, "int")("stamp", "flags"))
    ok = (F.col("flags").bitwiseAND(F.lit(stamp_checks.NOT_PREDICTED))) == 0
    values, own_flags = model_output_columns(model_uri)
    result_type = ", ".join([f"{name} float" for name in values] + (["flags int"] if own_flags else []))
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local", result_type=result_type, **({"params": params} if params else {}))

    predicted = frame.filter(ok).withColumn("p", udf("stamp"))
    merged_flags = F.col("flags").bitwiseOR(F.col("p.flags")) if own_flags else F.col("flags")
    predicted = predicted.select("id", *[F.col(f"p.{name}").alias(name) for name in values], merged_flags.alias("flags"))
    if training_range is not None:
        outside = F.lit(False)
        for name, (low, high) in training_range.as_meta().items():
            outside = outside | (F.col(name) < F.lit(float(low))) | (F.col(name) > F.lit(float(high)))
        predicted = predicted.withColumn(
            "flags", F.when(outside, F.col("flags").bitwiseOR(F.lit(int(StampFlag.OUT_OF_RANGE)))).otherwise(F.col("flags"))
        )
    rejected = frame.filter(~ok).select("id", *[F.lit(float("nan")).cast("float").alias(name) for name in values], "flags")
    result = predicted.unionByName(rejected)
    result.write.mode("overwrite").parquet(str(output_path))
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
        "model_uri": model_uri,
        "rows": rows,
        "flag_counts": counts,
        "seconds": round(seconds, 3),
        "stamps_per_s": round(rows / seconds, 1) if seconds > 0 else None,
    }
