"""DeepLeGATo networks (Keras 3) and the MLflow model that wraps them."""
