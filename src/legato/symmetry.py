"""The eight flips and rotations of a square stamp, under which the single-Sérsic parameters do not change.

Magnitude, effective radius, Sérsic index and ellipticity are invariant under the
dihedral group of the square (4 rotations by 90 degrees, each with or without a
mirror flip); only the position angle changes. Training draws a random symmetry
per stamp (:mod:`legato.training.noisy_batches`); inference can average a
network's estimates over several of them (``LoadedEstimator(symmetries=...)``).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from legato.columns import ERROR_SUFFIXES, INTERVAL_LEVELS, LOG_COLUMNS, SERSIC_COLUMNS

#: the size of the dihedral group of the square
SYMMETRY_COUNT = 8
#: interval half-width column suffix -> that level's half-width in Gaussian sigmas (1.0 for 68%, 1.96 for 95%)
SUFFIX_SIGMAS = {ERROR_SUFFIXES[level]: NormalDist().inv_cdf(0.5 + share / 2) for level, share in INTERVAL_LEVELS.items()}


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


def average_estimates(passes: list[dict]) -> dict[str, np.ndarray]:
    """The estimates of one set of stamps measured in several of their flips/rotations, averaged.

    mag and ellipticity are averaged, re and n in logarithm (as the networks regress them); ``q`` follows
    the ellipticity; every other column (flags, sky, aperture magnitude, blend fraction) is the first pass's
    (the stamps as given).

    The intervals shrink by what averaging removes. A pass's error is the stamp's own (its noise, shared by
    every flip) plus an orientation-dependent part ``d`` of variance ``delta**2``; averaging k passes removes
    ``delta**2 (1 - 1/k)`` of the error's variance. ``delta**2`` is estimated per stamp by the variance of its
    k estimates (in logarithm for re and n). Each half-width is read as ``z sigma`` (``z`` = 1 at 68%, 1.96 at
    95%, ``sigma`` the mean over the passes, relative for re and n) and becomes ``z sqrt(sigma**2 - delta**2 (1 -
    1/k))``, at least ``z sigma / sqrt(k)`` (passes with independent errors). Where the calibrated errors have
    heavier tails than a Gaussian (a 95% half-width over 1.96 times the 68% one), the tails are the stamp's own
    and the 95% interval shrinks less than the 68% one.

    Parameters
    ----------
    passes : list of dict
        Column -> ``(N,)`` array of each pass, the first on the stamps as given.

    Returns
    -------
    dict
        The averaged columns.
    """
    count = len(passes)
    columns = dict(passes[0])
    for name in SERSIC_COLUMNS:
        if name not in columns:
            continue
        values = np.stack([np.asarray(p[name], dtype=np.float64) for p in passes])
        logged = name in LOG_COLUMNS
        spread = np.log(values) if logged else values
        columns[name] = np.exp(np.mean(spread, axis=0)) if logged else np.mean(values, axis=0)
        present = [suffix for suffix in ERROR_SUFFIXES.values() if name + suffix in columns]
        widths = {suffix: np.mean([np.asarray(p[name + suffix], dtype=np.float64) for p in passes], axis=0) for suffix in present}
        if not widths:
            continue
        if count > 1:
            removed = np.var(spread, axis=0, ddof=1) * (1.0 - 1.0 / count)
            for suffix, width in widths.items():
                with np.errstate(divide="ignore", invalid="ignore"):
                    sigma2 = ((width / columns[name] if logged else width) / SUFFIX_SIGMAS[suffix]) ** 2
                    left = np.maximum(sigma2 - removed, sigma2 / count)
                    widths[suffix] = width * np.where(sigma2 > 0, np.sqrt(left / sigma2), 1.0)
        columns.update({name + s: width for s, width in widths.items()})
    if "ellipticity" in columns and "q" in columns:
        columns["q"] = 1.0 - columns["ellipticity"]
    return columns
