"""The real services legato runs on beyond one process, started on loopback and stopped by PID.

:mod:`~legato.platform.process` starts a server in its own process group and
waits until it answers; :mod:`~legato.platform.postgres` runs a local
PostgreSQL database for a shared MLflow tracking server;
:mod:`~legato.platform.spark_cluster` a Spark standalone master and workers.
"""
