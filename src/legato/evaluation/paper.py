"""The published figures of Tuccillo et al. (2018) that legato's reports are compared with."""

#: Table 1: R² of mag, re, n, ellipticity on the simulated test set, per method
PAPER_TABLE1 = {
    "arch1": {"mag": 0.961, "re": 0.899, "n": 0.968, "ellipticity": 0.983},
    "arch2": {"mag": 0.996, "re": 0.972, "n": 0.881, "ellipticity": 0.959},
    "galfit": {"mag": 0.981, "re": 0.967, "n": 0.807, "ellipticity": 0.953},
}
#: Table 2: R² on the real-like test set before and after transfer learning, and classical vs classical
PAPER_TABLE2 = {
    "before": {"mag": 0.813, "re": -0.431, "n": -0.331, "ellipticity": 0.773},
    "after": {"mag": 0.984, "re": 0.813, "n": 0.793, "ellipticity": 0.931},
    "classical_vs_classical": {"mag": 0.987, "re": 0.860, "n": 0.819, "ellipticity": 0.914},
}
