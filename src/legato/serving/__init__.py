"""The MLflow model of an estimator and serving it with ``mlflow models serve``.

Modules
-------
pyfunc
    The pyfunc model (raw stamps in, rows and flags out) and logging an estimator folder as one.
server
    Real MLflow processes (model server, tracking server) on loopback, started and stopped by PID.
endpoint
    legato's ``/invocations`` endpoint: body-size limit, strict JSON, the rows and flags of ``legato predict``.
scoring_hook
    The one hook into MLflow's scoring server, which installs that endpoint (pinned to MLflow 3.17-3.18).
"""
