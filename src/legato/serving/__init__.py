"""Serving the promoted model with ``mlflow models serve`` and talking to it over HTTP."""
