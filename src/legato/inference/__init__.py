"""Catalogue inference at survey scale: ``legato predict`` (streaming, resumable) and Apache Spark.

Modules
-------
flags
    Per-row bit flags of a predicted catalogue.
sources
    Input readers (stamp cube, folder of FITS stamps, mosaic + catalogue, Parquet shards)
    yielding fixed-size chunks of ``(ids, stamps, flags)``.
model
    Model resolution: registry alias, version or path -> predictor + name/version metadata.
writer
    Resumable part files and the atomic final table (FITS, ECSV or Parquet).
predict
    Orchestration of the local streaming path.
spark
    The same inference through ``mlflow.pyfunc.spark_udf``.
command
    The ``legato predict`` command line.

This package imports nothing heavy at import time (no TensorFlow, MLflow or Spark).
"""
