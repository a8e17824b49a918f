"""Per-row bit flags of a predicted catalogue, and the training range they check.

Every output row carries an integer ``flags`` column, the OR of the bits below.
The Sérsic columns of a row are NaN exactly when :attr:`StampFlag.FAILED_VALIDATION`
is set; every other bit is a warning and the row keeps its prediction.

========  ======================  ====================================================
bit       name                    meaning
========  ======================  ====================================================
1         ``BAD_PIXELS``          NaN/inf or non-physical pixels (``|value|`` above 1e10
                                  e/s, e.g. a -1e30 fill value): the stamp is not predicted
2         ``NEAR_EDGE``           the stamp reaches past the image edge; the missing
                                  pixels are filled with 0 (background) and it is predicted
4         ``OFF_IMAGE``           the source lies off the mosaic (no overlap, not predicted)
8         ``RESIZED``             the input stamp was not 64x64: centre-cut or zero-padded
                                  to 64x64 at the native pixel scale (never resampled)
16        ``OUT_OF_RANGE``        a prediction lies outside the training range
32        ``FAILED_VALIDATION``   no prediction: bad pixels, off the image, a constant
                                  (e.g. all-zero) stamp, no source or a wrong pixel scale
64        ``BAD_PIXSCALE``        the stamp's WCS pixel scale differs from the model's
                                  (0.06"/px) by more than 2% (not predicted)
128       ``INPUT_OUT_OF_RANGE``  the *input* lies outside what the estimator was trained
                                  on (its model card): noise level, or aperture flux
                                  fainter / brighter than its training galaxies; the
                                  row keeps its prediction (production estimator)
256       ``NO_SOURCE``           no significant flux in the 1" aperture: S/N < 3 against
                                  the stamp's own border noise (every model, e.g. pure
                                  noise), or S/N < 1 against the production network's
                                  noise estimate; values are NaN (with ``FAILED_VALIDATION``)
512       ``NO_BOUND``            ``--crb`` only: no Cramér-Rao bound at the estimate
                                  (singular Fisher matrix, e.g. unresolved, or n / q
                                  at a model limit); the ``crb_*`` columns are NaN
1024      ``BAD_FIT``             ``--residuals`` only: the model of the estimate does not
                                  describe the stamp (reduced chi² above the threshold
                                  calibrated on the simulated test set); values kept
2048      ``BLENDED``             a neighbour's segment reaches within 1" of the target
                                  centre (io.stamp_checks.blend_measurements); the row
                                  keeps its prediction; ``neighbour_fraction`` gives the
                                  neighbours' share of the aperture flux
========  ======================  ====================================================
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from legato.conventions import Q_MIN, SERSIC_N_MAX, SERSIC_N_MIN

#: dtype of the ``flags`` column
FLAG_DTYPE = np.int32
# the bits as plain integers: io/stamp_checks.py imports these (plain integers travel with its functions when
# they are pickled by value)
BAD_PIXELS = 1
NEAR_EDGE = 2
OFF_IMAGE = 4
RESIZED = 8
OUT_OF_RANGE = 16
FAILED_VALIDATION = 32
BAD_PIXSCALE = 64
INPUT_OUT_OF_RANGE = 128
NO_SOURCE = 256
NO_BOUND = 512
BAD_FIT = 1024
BLENDED = 2048


class StampFlag(enum.IntFlag):
    """Bit flags of one input stamp / output row (see the module docstring)."""

    BAD_PIXELS = BAD_PIXELS
    NEAR_EDGE = NEAR_EDGE
    OFF_IMAGE = OFF_IMAGE
    RESIZED = RESIZED
    OUT_OF_RANGE = OUT_OF_RANGE
    FAILED_VALIDATION = FAILED_VALIDATION
    BAD_PIXSCALE = BAD_PIXSCALE
    INPUT_OUT_OF_RANGE = INPUT_OUT_OF_RANGE
    NO_SOURCE = NO_SOURCE
    NO_BOUND = NO_BOUND
    BAD_FIT = BAD_FIT
    BLENDED = BLENDED


#: Bits that mean "do not predict this stamp".
NOT_PREDICTED = StampFlag.BAD_PIXELS | StampFlag.OFF_IMAGE | StampFlag.FAILED_VALIDATION | StampFlag.BAD_PIXSCALE


def describe(flags: int) -> str:
    """Names of the bits set in ``flags``, ``'|'``-joined (``''`` for 0)."""
    return "|".join(f.name for f in StampFlag if int(flags) & f)


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """Number of rows with each bit set."""
    flags = np.asarray(flags)
    return {f.name: int(np.count_nonzero(flags & int(f))) for f in StampFlag}


@dataclass(frozen=True)
class TrainingRange:
    """Range of the training labels (inclusive); predictions outside are flagged ``OUT_OF_RANGE``.

    Attributes
    ----------
    mag : tuple of float
        AB magnitude range.
    re_arcsec : tuple of float
        Semi-major half-light radius range, arcsec.
    n : tuple of float
        Sérsic index range.
    q : tuple of float
        Axis-ratio range.
    """

    mag: tuple
    re_arcsec: tuple
    n: tuple
    q: tuple

    @classmethod
    def from_params(cls, params: dict) -> TrainingRange:
        """The range the simulation draws from (``simulate`` section of ``params.yaml``).

        Magnitudes and radii come from ``mag_min/mag_max`` and
        ``re_min_arcsec/re_max_arcsec``; the Sérsic index and axis-ratio limits
        are the simulation's own bounds in :mod:`legato.conventions`.
        """
        sim = params["simulate"]
        return cls(
            mag=(float(sim["mag_min"]), float(sim["mag_max"])),
            re_arcsec=(float(sim["re_min_arcsec"]), float(sim["re_max_arcsec"])),
            n=(SERSIC_N_MIN, SERSIC_N_MAX),
            q=(Q_MIN, 1.0),
        )

    @classmethod
    def from_params_file(cls, path: str | Path = "params.yaml") -> TrainingRange:
        """:meth:`from_params` on a ``params.yaml`` file."""
        from legato.config import load_params

        return cls.from_params(load_params(path))

    def outside(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Boolean mask of rows with any predicted value outside the range (NaN rows are not flagged)."""
        mask = None
        for name, (low, high) in asdict(self).items():
            values = np.asarray(columns[name], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                out = (values < low) | (values > high)
            mask = out if mask is None else mask | out
        return mask

    def as_meta(self) -> dict:
        """The range as plain lists (for table metadata and the served model's configuration)."""
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_meta(cls, values: dict) -> TrainingRange:
        """Inverse of :meth:`as_meta`."""
        return cls(**{k: tuple(float(x) for x in values[k]) for k in ("mag", "re_arcsec", "n", "q")})
