"""legato: galaxy structure from images with deep learning (DeepLeGATo, re-implemented).

The top-level package is deliberately light: importing it never imports
TensorFlow, GalSim or MLflow, so ``legato --help`` stays fast.
"""

__version__ = "0.1.0"
