"""Training estimators, tracked in MLflow: the paper's networks, the resumable noise-aware one on scenes, domain adaptation."""
