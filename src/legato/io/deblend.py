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
    out[:, : cells * BLEND_BIN, : cells * BLEND_BIN] = neighbour_map.repeat(BLEND_BIN, axis=1).repeat(BLEND_BIN, axis=2)
    if grow_pix > 0 and out.any():
        from scipy import ndimage

        structure = np.zeros((1, 2 * grow_pix + 1, 2 * grow_pix + 1), dtype=bool)
        structure[0] = True
        rows = np.flatnonzero(out.any(axis=(1, 2)))
        out[rows] = ndimage.binary_dilation(out[rows], structure=structure)
    return out


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
    height, width = stamps.shape[1:]
    mirror_y = 2 * (height // 2) - np.arange(height)
    mirror_x = 2 * (width // 2) - np.arange(width)
    inside_y, inside_x = (mirror_y >= 0) & (mirror_y < height), (mirror_x >= 0) & (mirror_x < width)
    my, mx = np.clip(mirror_y, 0, height - 1), np.clip(mirror_x, 0, width - 1)
    on_stamp = inside_y[:, None] & inside_x[None, :]
    for row in rows:
        stamp, masked = out[row], mask[row]
        mirrored = stamp[my[:, None], mx[None, :]]
        usable = masked & on_stamp & ~masked[my[:, None], mx[None, :]]
        noisy = masked & ~usable
        filled = np.where(usable, mirrored, stamp)
        if noisy.any():
            rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(stamps[row], dtype=np.float32).tobytes()))
            filled[noisy] = rng.normal(0.0, _sky_sigma(stamp, masked), int(noisy.sum()))
        out[row] = filled
    return out


def _sky_sigma(stamp: np.ndarray, masked: np.ndarray) -> float:
    """Normalised MAD of the stamp's outer ``NOISE_FRAME_PIX`` frame outside the mask (the whole frame if all masked)."""
    frame = np.ones(stamp.shape, dtype=bool)
    frame[NOISE_FRAME_PIX:-NOISE_FRAME_PIX, NOISE_FRAME_PIX:-NOISE_FRAME_PIX] = False
    values = stamp[frame & ~masked]
    if values.size < 16:
        values = stamp[frame]
    return float(1.4826 * np.median(np.abs(values - np.median(values))))
