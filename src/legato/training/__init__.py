"""Training DeepLeGATo networks on simulated stamp sets, tracked in MLflow."""
