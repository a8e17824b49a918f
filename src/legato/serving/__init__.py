"""Serving the promoted model with ``mlflow models serve`` and talking to it over HTTP.

Modules
-------
server
    Real MLflow processes (model server, tracking server) on loopback, started and stopped by PID.
endpoint
    legato's ``/invocations`` endpoint: body-size limit, strict JSON, the rows and flags of ``legato predict``.
scoring_hook
    The one hook into MLflow's scoring server, which installs that endpoint (pinned to MLflow 3.17-3.18).
"""
