"""Neighbours removed from a stamp, so that a network sees what a masked fit sees.

The classical fitter masks every neighbour's pixels (``legato.analysis.segmentation``)
and fits the target on the rest. A network cannot skip pixels, but it can be shown
the stamp with the neighbours' pixels replaced by what would be there without them:

- a neighbour pixel whose point-mirror through the stamp centre is neither a
  neighbour's nor outside the stamp takes the mirror's value: a centred Sérsic
  profile (any ellipse centred on the target) is point-symmetric, so the target's
  own light under the neighbour is kept, with noise of the same level;
- the others (both sides covered, or the mirror off the stamp) take white noise of
  the stamp's measured sky sigma, drawn from a generator seeded by the stamp's own
  bytes, so that the same stamp is filled the same way in every inference path,
  whatever the batch it arrives in.

The neighbours' pixels are :func:`legato.io.stamp_checks.blend_measurements`'s
neighbour map (the blend detector's segments, binned ``BLEND_BIN x BLEND_BIN``),
brought back to pixels and grown by ``grow_pix`` so that the neighbours' faint wings,
below the detector's 1-sigma segments, go too. Units: pixels; values in the stamps' own
units (electrons/s).
"""

from __future__ import annotations

import zlib

import numpy as np

from legato.io.stamp_checks import BLEND_BIN, NOISE_FRAME_PIX

#: pixels the neighbours' detected segments are grown by before they are replaced (chosen by measurement:
#: benchmarks/deblend_input.py, reports/deblend_input.json)
DEBLEND_GROW_PIX = 2


def neighbour_pixels(neighbour_map: np.ndarray, size: int, grow_pix: int = DEBLEND_GROW_PIX) -> np.ndarray:
    """The binned neighbour map of :func:`~legato.io.stamp_checks.blend_measurements` as ``(N, size, size)`` pixels,
    grown by ``grow_pix`` (a square of side ``2 grow_pix + 1``; never across stamps).

    Parameters
    ----------
    neighbour_map : numpy.ndarray
        bool ``(N, size // BLEND_BIN, size // BLEND_BIN)``.
    size : int
        The stamps' side, pixels (a remainder of the binning is never a neighbour's).
    grow_pix : int
        Growth, pixels (0: the segments as detected).
    """
    neighbour_map = np.asarray(neighbour_map, dtype=bool)
    count, cells = len(neighbour_map), neighbour_map.shape[-1]
    out = np.zeros((count, size, size), dtype=bool)
    rows = np.flatnonzero(neighbour_map.any(axis=(1, 2)))
    if len(rows):
        pixels = np.zeros((len(rows), size, size), dtype=bool)
        pixels[:, : cells * BLEND_BIN, : cells * BLEND_BIN] = neighbour_map[rows].repeat(BLEND_BIN, axis=1).repeat(BLEND_BIN, axis=2)
        out[rows] = _grown(pixels, grow_pix)
    return out


def _grown(mask: np.ndarray, grow_pix: int) -> np.ndarray:
    """``(N, H, W)`` bool ``mask`` dilated by a square of side ``2 grow_pix + 1`` (nothing beyond the edges).

    A square is the product of two segments, so the dilation is one along each axis in turn:
    the same pixels as ``scipy.ndimage.binary_dilation`` with that square, in a few shifted ORs.
    """
    for axis in (1, 2):
        grown = mask.copy()
        length = mask.shape[axis]
        for shift in range(1, min(grow_pix, length - 1) + 1):
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[axis], tail[axis] = slice(shift, None), slice(None, length - shift)
            grown[tuple(head)] |= mask[tuple(tail)]
            grown[tuple(tail)] |= mask[tuple(head)]
        mask = grown
    return mask


def deblend(stamps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The stamps with their ``mask`` pixels replaced by the point-mirror's value, else by seeded sky noise.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(N, H, W)`` float stamps with finite pixels, the target centred on pixel ``(H // 2, W // 2)``.
    mask : numpy.ndarray
        bool ``(N, H, W)``: the pixels to replace (:func:`neighbour_pixels`).

    Returns
    -------
    numpy.ndarray
        A new float32 ``(N, H, W)`` array; stamps without a masked pixel are copied unchanged.
    """
    stamps = np.asarray(stamps)
    mask = np.asarray(mask, dtype=bool)
    if stamps.shape != mask.shape or stamps.ndim != 3:
        raise ValueError(f"stamps {stamps.shape} and mask {mask.shape} must both be (N, H, W)")
    out = np.array(stamps, dtype=np.float32, copy=True)
    rows = np.flatnonzero(mask.any(axis=(1, 2)))
    if not len(rows):
        return out
    chosen, masked = out[rows], mask[rows]
    noisy = masked & _point_mirrored(masked, True)  # the mirror is a neighbour's too, or off the stamp
    with_noise = np.flatnonzero(noisy.any(axis=(1, 2)))
    sigmas = _sky_sigmas(chosen[with_noise], masked[with_noise]) if len(with_noise) else []
    np.copyto(chosen, _point_mirrored(chosen, 0.0), where=masked & ~noisy)
    for index, sigma in zip(with_noise, sigmas):  # seeded by the stamp as given
        rng = np.random.default_rng(zlib.crc32(out[rows[index]].tobytes()))
        chosen[index][noisy[index]] = rng.normal(0.0, float(sigma), int(noisy[index].sum()))
    out[rows] = chosen
    return out


def _point_mirrored(cube: np.ndarray, fill) -> np.ndarray:
    """Each ``(N, H, W)`` stamp reflected through its centre pixel ``(H // 2, W // 2)``: pixel ``(y, x)`` holds pixel
    ``(2 (H // 2) - y, 2 (W // 2) - x)``, ``fill`` where that is off the stamp (row and column 0 of an even side)."""
    height, width = cube.shape[1:]
    top, left = 2 * (height // 2) - height + 1, 2 * (width // 2) - width + 1
    out = np.full_like(cube, fill)
    out[:, top:, left:] = cube[:, ::-1, ::-1][:, : height - top, : width - left]
    return out


def _sky_sigmas(stamps: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Per stamp, the normalised MAD of its outer ``NOISE_FRAME_PIX`` frame outside ``masked`` (the whole frame where
    fewer than 16 such pixels are left): float64 ``(N,)``, each ``1.4826 * median(|x - median(x)|)`` computed in float32
    as ``numpy.median`` computes it (the mean of the two middle values, summed in float32, for an even count).

    One sort per stamp, no sort of the deviations (:func:`_ranked_deviation`): a third of the time of two
    ``numpy.median`` calls per stamp, the same bits.
    """
    values, kept = _frame(stamps), ~_frame(masked)
    kept[kept.sum(axis=1) < 16] = True
    ordered = np.sort(np.where(kept, values, np.float32(np.inf)), axis=1)
    count = kept.sum(axis=1)
    median = _middle(count, lambda rank: np.take_along_axis(ordered, rank[:, None], axis=1)[:, 0])
    return (np.float32(1.4826) * _middle(count, lambda rank: _ranked_deviation(ordered, count, median, rank))).astype(np.float64)


def _frame(cube: np.ndarray) -> np.ndarray:
    """The outer ``NOISE_FRAME_PIX`` frame of each ``(N, H, W)`` stamp as ``(N, pixels)`` (in no particular order)."""
    edge, count = NOISE_FRAME_PIX, len(cube)
    sides = (cube[:, :edge], cube[:, -edge:], cube[:, edge:-edge, :edge], cube[:, edge:-edge, -edge:])
    return np.concatenate([side.reshape(count, -1) for side in sides], axis=1)


def _middle(count: np.ndarray, ranked) -> np.ndarray:
    """The median of each row from ``ranked(rank)``, its rank-``rank`` value: the middle one for an odd ``count``,
    else the float32 mean of the two middle ones."""
    upper, lower = ranked(count // 2), ranked((count - 1) // 2)
    return np.where(count % 2 == 1, upper, (lower + upper) / np.float32(2)).astype(np.float32)


def _ranked_deviation(ordered: np.ndarray, count: np.ndarray, median: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Rank-``rank`` (0-based) absolute deviation from ``median`` of each row's first ``count`` ascending ``ordered`` values.

    The deviations are two ascending runs, ``below[i] = m - x[p - 1 - i]`` for the ``p`` values under the median and
    ``above[j] = x[p + j] - m`` for the others; the ``rank + 1`` smallest take the first ``i`` of one and the first
    ``rank + 1 - i`` of the other, ``i`` found by bisection (the same float32 values a sort of the deviations would rank).
    """
    row = np.arange(len(ordered))
    under = (ordered < median[:, None]).sum(axis=1)
    taken = rank + 1

    def below(i):
        return np.abs(median - ordered[row, np.clip(under - 1 - i, 0, None)])  # abs: a zero's sign, as |x - m|

    def above(j):
        return np.abs(ordered[row, np.clip(under + j, 0, ordered.shape[1] - 1)] - median)

    low, high = np.maximum(0, taken - (count - under)), np.minimum(taken, under)
    while np.any(low < high):
        middle = (low + high) // 2
        more = (middle < under) & (taken - middle > 0) & (below(middle) < above(taken - middle - 1))
        low, high = np.where(more, middle + 1, low), np.where(more, high, middle)
    last_below = np.where(low > 0, below(low - 1), np.float32(-np.inf))
    last_above = np.where(taken - low > 0, above(taken - low - 1), np.float32(-np.inf))
    return np.maximum(last_below, last_above)
