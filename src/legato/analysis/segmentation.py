"""Source detection and deblending of a stamp with photutils, as a survey pipeline does before a fit.

CANDELS catalogues (Galametz et al. 2013) detect on the F160W image smoothed
by a kernel about the PSF's size, threshold at ~1.5 sigma, and deblend with
multi-threshold contrast; van der Wel et al. (2012) then fit each galaxy with
its neighbours masked (or fitted). Here, on one stamp:

1. the stamp is convolved with a 2-D Gaussian of FWHM ``kernel_fwhm_pix``
   (3 pixels: the F160W PSF at 0.06"/pixel);
2. :func:`photutils.segmentation.detect_sources` keeps connected regions of at
   least ``n_pixels`` above ``threshold_sigma`` times the per-pixel noise;
3. :func:`photutils.segmentation.deblend_sources` splits blends (32 levels,
   contrast ``contrast``);
4. the target is the segment at the stamp centre (or, failing that, the one
   whose pixels come nearest to it); every other segment is a neighbour, grown
   by ``grow_pix`` pixels so its wings are masked too.

Units: the stamp and the noise in the same units (electrons/s); sizes in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legato.analysis.morphometry import border_sigma
from legato.stats import robust_sigma

KERNEL_FWHM_PIX = 3.0
THRESHOLD_SIGMA = 1.5
N_PIXELS = 5
CONTRAST = 0.05  # "cold" enough not to shred clumpy discs into their knots (0.005 split 1 in 300 into 5 pieces)
GROW_PIX = 2


@dataclass(frozen=True)
class StampSegmentation:
    """The sources found in one stamp.

    Attributes
    ----------
    labels : numpy.ndarray
        Integer segmentation map (0 = sky), the stamp's shape.
    target : int
        Label of the central source (0 when nothing is detected near the centre).
    neighbour_mask : numpy.ndarray
        True on the (grown) pixels of every source other than the target.
    source_mask : numpy.ndarray
        True on the (grown) pixels of every source, the target included: the sky is the rest.
    """

    labels: np.ndarray
    target: int
    neighbour_mask: np.ndarray
    source_mask: np.ndarray

    @property
    def n_neighbours(self) -> int:
        """Number of detected sources other than the target."""
        found = set(np.unique(self.labels)) - {0, self.target}
        return len(found)


def _grown(selected: np.ndarray, grow_pix: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    if grow_pix <= 0 or not selected.any():
        return selected
    return binary_dilation(selected, structure=np.ones((2 * grow_pix + 1,) * 2, dtype=bool))


def central_label(labels: np.ndarray, max_distance_pix: float = 5.0) -> int:
    """The segment at the stamp centre, else the one with a pixel nearest to it within ``max_distance_pix`` (0: none)."""
    ny, nx = labels.shape
    cy, cx = ny // 2, nx // 2
    if labels[cy, cx] > 0:
        return int(labels[cy, cx])
    rows, cols = np.nonzero(labels)
    if rows.size == 0:
        return 0
    distance = np.hypot(rows - cy, cols - cx)
    nearest = int(np.argmin(distance))
    return int(labels[rows[nearest], cols[nearest]]) if distance[nearest] <= max_distance_pix else 0


def segment_stamp(
    image: np.ndarray,
    sigma: float | None = None,
    threshold_sigma: float = THRESHOLD_SIGMA,
    kernel_fwhm_pix: float = KERNEL_FWHM_PIX,
    n_pixels: int = N_PIXELS,
    contrast: float = CONTRAST,
    grow_pix: int = GROW_PIX,
) -> StampSegmentation:
    """Detect and deblend the sources of a background-subtracted stamp.

    Parameters
    ----------
    image : numpy.ndarray
        2-D stamp, electrons/s, background-subtracted (NaN pixels are treated as sky and never detected).
    sigma : float, optional
        Per-pixel noise, electrons/s; measured on the stamp border (NMAD) when not given
        (on the other pixels when the border is one constant value, as beyond a mosaic's edge).
    threshold_sigma : float
        Detection threshold in units of ``sigma`` (on the smoothed stamp).
    kernel_fwhm_pix : float
        FWHM of the Gaussian detection kernel, pixels.
    n_pixels : int
        Smallest number of connected pixels of a source.
    contrast : float
        Deblending contrast (fraction of a segment's flux a component must hold).
    grow_pix : int
        Pixels by which the masks are grown.

    Returns
    -------
    StampSegmentation

    Raises
    ------
    ValueError
        If the stamp is not 2-D or ``sigma`` is not a positive finite number.
    """
    from astropy.convolution import convolve
    from photutils.segmentation import deblend_sources, detect_sources, make_2dgaussian_kernel

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"a stamp must be 2-D, got shape {image.shape}")
    if sigma is None:
        sigma = border_sigma(image)
        if not sigma > 0:  # a constant border (no data beyond a mosaic's edge): the noise of the other pixels
            values = image[np.isfinite(image)]
            constant, counts = np.unique(values, return_counts=True)
            values = values[values != constant[np.argmax(counts)]] if counts.size else values
            sigma = robust_sigma(values) if values.size else float("nan")
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"the stamp's noise sigma must be a positive number, got {sigma}")
    finite = np.isfinite(image)
    data = np.where(finite, image, 0.0)
    size = int(2 * round(1.5 * kernel_fwhm_pix) + 1)
    smoothed = convolve(data, make_2dgaussian_kernel(kernel_fwhm_pix, size=size), normalize_kernel=True)
    empty = np.zeros(image.shape, dtype=bool)
    segments = detect_sources(smoothed, threshold_sigma * sigma, n_pixels, mask=~finite)
    if segments is None:
        return StampSegmentation(np.zeros(image.shape, dtype=np.int32), 0, empty, empty)
    if segments.n_labels > 0:
        segments = deblend_sources(smoothed, segments, n_pixels, contrast=contrast, progress_bar=False)
    labels = np.asarray(segments.data, dtype=np.int32)
    target = central_label(labels)
    others = (labels > 0) & (labels != target)
    return StampSegmentation(labels, target, _grown(others, grow_pix), _grown(labels > 0, grow_pix))
