"""The eight flips and rotations of a square stamp, under which the single-Sérsic parameters do not change.

Magnitude, effective radius, Sérsic index and ellipticity are invariant under the
dihedral group of the square (4 rotations by 90 degrees, each with or without a
mirror flip); only the position angle changes. Training draws a random symmetry
per stamp (:mod:`legato.training.noisy_batches`); inference can average a
network's estimates over several of them (``LoadedEstimator(symmetries=...)``).
"""

from __future__ import annotations

import numpy as np

#: the size of the dihedral group of the square
SYMMETRY_COUNT = 8


def dihedral(stamps: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Apply one of the 8 flips/rotations (``codes`` in 0..7) to each stamp of ``(N, H, W)``.

    Code ``k`` rotates by ``k % 4`` quarter turns, then (``k >= 4``) mirrors the columns.
    The Sérsic parameters (mag, re, n, ellipticity) are invariant under them.
    """
    out = np.empty_like(stamps)
    for code in range(SYMMETRY_COUNT):
        members = np.flatnonzero(codes == code)
        if len(members) == 0:
            continue
        block = np.rot90(stamps[members], code % 4, axes=(1, 2))
        out[members] = block[:, :, ::-1] if code >= 4 else block
    return out
