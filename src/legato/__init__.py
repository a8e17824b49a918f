"""legato: galaxy structure from images with deep learning (DeepLeGATo, re-implemented).

The top-level package is deliberately light: importing it never imports
TensorFlow, GalSim or MLflow, so ``legato --help`` stays fast.
"""

import os

__version__ = "0.1.0"

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI, BF16 or AMX; elsewhere
# (AMD EPYC, AVX2-only Xeons) its Eigen kernels run the networks at about half the speed (docs/usage.md,
# reports/speed_routed.json against reports/speed_routed_eigen.json). TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
