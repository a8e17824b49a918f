"""Catalogue inference at survey scale: ``legato predict`` (streaming, resumable) and Apache Spark.

Modules
-------
predict
    The local streaming path: chunks of stamps in, rows with flags out.
measurements
    What ``--crb`` and ``--residuals`` add to each row (Cramér-Rao bounds, fit statistics).
writer
    Resumable part files and the atomic final table (FITS, ECSV or Parquet).
spark
    The same inference through ``mlflow.pyfunc.spark_udf``.

The stamp inputs and their checks are :mod:`legato.io.stamp_inputs` and
:mod:`legato.io.stamp_checks`; which model to load is :mod:`legato.registry.resolve`.
This package imports nothing heavy at import time (no TensorFlow, MLflow or Spark).
"""
