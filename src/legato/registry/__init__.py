"""The MLflow model registry: registering and publishing estimators, gated promotion, rollback, resolving a model to load."""
