"""The MLflow model registry: registering estimators, gated promotion of aliases, rollback."""
