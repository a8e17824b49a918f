"""Per-stamp checks and readers shared by the local and the Spark paths.

Both paths call the same functions (the Spark executors through the shipped
model's rows, :meth:`legato.serving.pyfunc.SersicEstimator.rows`), which is
what makes their flags identical row for row. The module takes from ``legato``
only plain integers (the flag bits of :mod:`legato.flags`), so its functions
also pickle by value with everything they need.
"""

from __future__ import annotations

import warnings

import numpy as np

from legato.flags import (  # plain integers, captured by value with the functions that use them
    BAD_PIXELS,
    BAD_PIXSCALE,
    BLENDED,
    FAILED_VALIDATION,
    FLAG_DTYPE,
    NO_SOURCE,
    OFF_IMAGE,
    RESIZED,
)

NOT_PREDICTED = BAD_PIXELS | OFF_IMAGE | FAILED_VALIDATION | BAD_PIXSCALE
PIXSCALE_TOLERANCE = 0.02
#: |pixel| above this (electrons/s) is not a measurement (a fill value such as -1e30): nothing in
#: an F160W image comes within orders of magnitude of it (a saturated star core is ~1e5 e/s)
MAX_PIXEL_VALUE = 1e10
#: the aperture of the source check: radius 1 arcsec at the models' 0.06 arcsec/pixel
#: (conventions.PIXEL_SCALE_ARCSEC, repeated: this module takes only the flag bits from legato)
SOURCE_APERTURE_PIX = 1.0 / 0.06
#: the noise of the source check comes from the stamp's outer frame of this width, in blocks of
#: NOISE_BLOCK_PIX x NOISE_BLOCK_PIX pixels (block means keep correlated noise honest)
NOISE_FRAME_PIX = 8
NOISE_BLOCK_PIX = 4
#: a stamp whose aperture S/N lies below this holds no measurable source. Pure-noise stamps
#: (white or correlated) fall below it 94-98% of the time; the faintest galaxies of the simulated
#: test set, the realistic set and the real UDS stamps have S/N 5.6, 4.7 and 4.1
MIN_SOURCE_SNR = 3.0
#: the blend detector (:func:`blend_measurements`). Its thresholds were chosen by measurement: scenes composed from the
#: 6,000 noiseless validation models (every band) at the scene training's depths, scored against the neighbours'
#: exact share of the aperture flux, and the realistic test A (isolated clumpy / COSMOS galaxies must stay unflagged);
#: benchmarks/blend_detection.py, reports/blend_detection.json, docs/scenes.md. A neighbour's pixels must reach within
#: this radius of the centre (the source check's 1" aperture):
BLEND_RADIUS_PIX = SOURCE_APERTURE_PIX
#: the detection image is the stamp binned by this factor: 2x2 sums smooth over about the PSF's core (F160W FWHM 3
#: pixels) and leave a quarter of the pixels to label, which is what reaches 10,000 stamps/s on one core
BLEND_BIN = 2
#: binned pixels above this many noise sigmas form the segments (1.0: recall 0.90 on the scenes against 0.87 at 2.0,
#: the same precision)
BLEND_DETECT_SIGMA = 1.0
#: a source is significant when its peak (binned pixel) reaches this S/N: 8 leaves 0.5% of the isolated scene targets
#: flagged (1.5% at 5) and halves the isolated COSMOS galaxies of test A that are flagged (22% against 38%)
BLEND_PEAK_SNR = 8.0
#: ... and its own segment at least this many (unbinned) pixels
BLEND_MIN_AREA_PIX = 10
#: without a segment on the centre, the target is the one of the significant peak nearest the centre within this (pixels);
#: a peak farther than this is never the target's own
BLEND_TARGET_SEARCH_PIX = 3.0
#: a second peak inside the target's segment is a neighbour only when, along the line to the target's peak, the
#: binned image dips below the lower of the two by this many noise sigmas ...
BLEND_SADDLE_SIGMA = 3.0
#: ... and by this fraction of its height (a clump of one galaxy shows no such saddle; 0.2 flags 10% of the isolated
#: clumpy galaxies of test A, 0.1 flags 12%)
BLEND_SADDLE_CONTRAST = 0.2
#: points sampled along that line
BLEND_LINE_SAMPLES = 16
#: the pixels of a segment shared by the target and neighbours go to the peak of least d**2 - 2 w**2 ln(peak S/N): the
#: boundary where two Gaussians of this width w (pixels) are equally bright (5: the least bias of 2, 3, 5, 8)
BLEND_OWNER_WIDTH_PIX = 5.0
#: the neighbour map (``with_map``: what legato.io.deblend removes) leaves out the share of a peak inside the target's
#: own segment that lies nearer than this to the target's peak: such splits are mostly noise on flat, faint galaxies
#: (0.4% of the simulated isolated test galaxies had one; 6 pixels keeps 0.1%, and Table 1 of the deblended estimator
#: within 0.0001 of its base), while true neighbours merged into the target's segment lie 11-25 pixels away (10th-90th
#: percentile on the realistic test A; benchmarks/deblend_input.py)
MAP_MIN_PEAK_DISTANCE_PIX = 6.0
#: stamps processed at once: 256 keep the working arrays in the CPU cache (2.5x the speed of 2048)
BLEND_CHUNK = 256
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts")
CELESTIAL_PREFIXES = ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT")


def check_stamps(stamps: np.ndarray, flags) -> np.ndarray:
    """Input flags completed with the stamp checks.

    NaN/inf pixels, or non-physical ones (``|value| > MAX_PIXEL_VALUE``, e.g. a
    -1e30 fill value), give ``BAD_PIXELS | FAILED_VALIDATION``; a constant stamp
    (e.g. all zeros: no data) gives ``FAILED_VALIDATION``; a stamp with no
    measurable source (:func:`source_snr` below ``MIN_SOURCE_SNR``, e.g. pure
    noise) gives ``NO_SOURCE | FAILED_VALIDATION``. Returns a new int32 array; a
    row is predicted when ``flags & NOT_PREDICTED == 0``.
    """
    flags = np.array(flags, dtype=FLAG_DTYPE, copy=True)
    if len(stamps) == 0:
        return flags
    stamps = np.asarray(stamps)
    flat = stamps.reshape(len(stamps), -1)
    with np.errstate(invalid="ignore"):
        high, low = flat.max(axis=1), flat.min(axis=1)  # NaN and inf reach one of them
        finite = np.isfinite(high) & np.isfinite(low)
        extreme = finite & ((high > MAX_PIXEL_VALUE) | (low < -MAX_PIXEL_VALUE))
        constant = finite & (high == low)
    flags[~finite | extreme] |= BAD_PIXELS | FAILED_VALIDATION
    flags[constant & ~extreme] |= FAILED_VALIDATION
    measurable = np.flatnonzero(finite & ~extreme & ~constant)
    if len(measurable):
        empty = ~(source_snr(stamps[measurable]) >= MIN_SOURCE_SNR)
        flags[measurable[empty]] |= NO_SOURCE | FAILED_VALIDATION
    return flags


def source_snr(stamps: np.ndarray) -> np.ndarray:
    """Signal-to-noise of the flux in the central 1-arcsec aperture of each stamp ``(N, H, W)``.

    Background and noise come from the stamp itself: the median and the
    normalised median absolute deviation of the means of ``NOISE_BLOCK_PIX``-square
    blocks in the outer ``NOISE_FRAME_PIX`` pixels. Block means carry the noise
    correlation of drizzled images, so the aperture error (block sigma times the
    square root of the number of blocks in the aperture) holds for white and
    correlated noise alike. A noiseless stamp has S/N +inf (flux) or NaN (none).
    """
    stamps = np.asarray(stamps)
    size = stamps.shape[-1]
    blocks = size // NOISE_BLOCK_PIX
    frame, aperture = _source_masks(size)
    cut = stamps[:, : blocks * NOISE_BLOCK_PIX, : blocks * NOISE_BLOCK_PIX]
    # block sums in float64, down the block's rows then along them (exact: a float64 sum of 16 float32 values of
    # less than 2**29 dynamic range), 2.3x as fast as one mean over both axes of the 5-D view
    rows = cut.reshape(len(stamps), blocks, NOISE_BLOCK_PIX, blocks * NOISE_BLOCK_PIX).sum(axis=2, dtype=np.float64)
    means = rows.reshape(len(stamps), blocks, blocks, NOISE_BLOCK_PIX).sum(axis=3) / NOISE_BLOCK_PIX**2
    border = means[:, frame]
    background = np.median(border, axis=1)
    block_sigma = 1.4826 * np.median(np.abs(border - background[:, None]), axis=1)
    pixels = aperture.sum()
    flux = np.einsum("nij,ij->n", stamps, aperture.astype(stamps.dtype), dtype=np.float64) - background * pixels
    error = block_sigma * NOISE_BLOCK_PIX * np.sqrt(pixels)
    with np.errstate(divide="ignore", invalid="ignore"):
        return flux / error


def blend_measurements(stamps: np.ndarray, with_map: bool = False) -> tuple[np.ndarray, ...]:
    """Neighbour share of the aperture flux and the blend flag of each stamp ``(N, H, W)``, from the stamp alone.

    The stamp is binned ``BLEND_BIN x BLEND_BIN``; background and noise are the
    median and normalised MAD of the binned pixels of its outer ``NOISE_FRAME_PIX``
    frame (binned pixels carry correlated noise honestly, as the block means of
    :func:`source_snr` do). Binned pixels above ``BLEND_DETECT_SIGMA`` noise sigmas
    form segments (8-connected, labelled on the whole cube at once, never across
    stamps); peaks are the 3x3 local maxima. The target is the segment on the
    centre (else the one of the significant peak nearest the centre within
    ``BLEND_TARGET_SEARCH_PIX``); its peak is that segment's significant peak
    nearest the centre within the same radius (else the centre). Neighbours are

    - every other segment that is significant: a peak of S/N at least
      ``BLEND_PEAK_SNR`` and at least ``BLEND_MIN_AREA_PIX`` pixels;
    - every other significant peak inside the target's segment with a real saddle
      between it and the target's peak: the binned image along the line between
      them dips below the lower peak by ``BLEND_SADDLE_SIGMA`` noise sigmas and by
      ``BLEND_SADDLE_CONTRAST`` of its height (or any such peak, when the target
      has no peak of its own: a faint target on a brighter neighbour's wing). The
      segment's pixels are then shared among its peaks (``BLEND_OWNER_WIDTH_PIX``).

    A stamp is blended when a neighbour's pixels reach within ``BLEND_RADIUS_PIX``
    of the centre. Thresholds and their measured recall and precision:
    docs/scenes.md.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(N, H, W)`` background-subtracted stamps, the target centred on pixel ``(H // 2, W // 2)``.
    with_map : bool
        Also return where the neighbours are over the whole stamp (what :mod:`legato.io.deblend` removes).

    Returns
    -------
    neighbour_fraction : numpy.ndarray
        float32 ``(N,)``: the neighbours' pixels' share of the background-subtracted
        flux inside the 1" aperture (``SOURCE_APERTURE_PIX``, on the binned pixels),
        clipped to [0, 1]; the neighbours' light under the target's own pixels is
        the target's, so it is low by a few percent of the aperture flux;
        NaN for stamps with NaN/inf, non-physical or constant pixels.
    blended : numpy.ndarray
        bool ``(N,)``: a neighbour's pixels reach within ``BLEND_RADIUS_PIX`` of the
        centre (False for the stamps with NaN fraction).
    neighbour_map : numpy.ndarray
        Only with ``with_map``: bool ``(N, H // BLEND_BIN, W // BLEND_BIN)``, the binned pixels that belong to a
        neighbour anywhere in the stamp (its own segment, or its share of a segment shared with the target when its
        peak lies at least ``MAP_MIN_PEAK_DISTANCE_PIX`` from the target's); all False for the stamps with NaN fraction.
    """
    stamps = np.asarray(stamps)
    count = len(stamps)
    fraction = np.full(count, np.nan, dtype=np.float32)
    blended = np.zeros(count, dtype=bool)
    cells = stamps.shape[-1] // BLEND_BIN if stamps.ndim == 3 else 0
    neighbour_map = np.zeros((count, cells, cells), dtype=bool) if with_map else None
    if count == 0:
        return (fraction, blended, neighbour_map) if with_map else (fraction, blended)
    flat = stamps.reshape(count, -1)
    with np.errstate(invalid="ignore"):
        high, low = flat.max(axis=1), flat.min(axis=1)
        usable = np.isfinite(high) & np.isfinite(low) & (high > low) & (high <= MAX_PIXEL_VALUE) & (low >= -MAX_PIXEL_VALUE)
    rows = np.flatnonzero(usable)
    for start in range(0, len(rows), BLEND_CHUNK):
        chunk = rows[start : start + BLEND_CHUNK]
        found = _blend_chunk(np.asarray(stamps[chunk], dtype=np.float32), with_map)
        fraction[chunk], blended[chunk] = found[:2]
        if with_map:
            neighbour_map[chunk] = found[2]
    return (fraction, blended, neighbour_map) if with_map else (fraction, blended)


def blend_flags(blended: np.ndarray) -> np.ndarray:
    """The ``BLENDED`` bit of each row of :func:`blend_measurements`'s ``blended`` (int32, OR it into the flags)."""
    return np.where(np.asarray(blended, dtype=bool), BLENDED, 0).astype(FLAG_DTYPE)


def _blend_chunk(cube: np.ndarray, with_map: bool = False) -> tuple[np.ndarray, ...]:
    """:func:`blend_measurements` of ``(N, H, W)`` float32 stamps with finite, non-constant pixels."""
    from scipy import ndimage

    count, size = len(cube), cube.shape[-1]
    binned = _binned(cube)
    cells = binned.shape[-1]
    centre = (size // 2 - (BLEND_BIN - 1) / 2) / BLEND_BIN  # the target's centre in binned pixels
    middle = int(round(centre))
    border = binned[:, _frame_mask(cells)]
    half = border.shape[1] // 2
    background = np.partition(border, half, axis=1)[:, half]
    sigma = 1.4826 * np.partition(np.abs(border - background[:, None]), half, axis=1)[:, half]
    peak = binned.reshape(count, -1).max(axis=1) - background
    sigma = np.maximum(sigma, 1e-6 * np.abs(peak) + np.finfo(np.float32).tiny)  # a noiseless stamp: no noise to scale by
    snr = np.full((count, cells + 2, cells + 2), -np.inf, dtype=np.float32)  # padded for the local maxima
    inner = snr[:, 1:-1, 1:-1]
    np.subtract(binned, background[:, None, None].astype(np.float32), out=inner)
    inner /= sigma[:, None, None].astype(np.float32)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within a stamp, never across stamps
    labels = np.empty(inner.shape, dtype=np.intp)
    ndimage.label(inner > BLEND_DETECT_SIGMA, structure=structure, output=labels)
    area = np.bincount(labels.ravel())

    # significant peaks (3x3 local maxima): stamp, y, x, segment and height
    rows = np.maximum(np.maximum(snr[:, :, :-2], snr[:, :, 2:]), snr[:, :, 1:-1])
    box = np.maximum(np.maximum(rows[:, :-2], rows[:, 2:]), rows[:, 1:-1])
    ps, py, px = np.nonzero((inner >= box) & (inner >= BLEND_PEAK_SNR))
    peak_label, peak_snr = labels[ps, py, px], inner[ps, py, px]
    distance2 = (py - centre) ** 2 + (px - centre) ** 2
    significant = np.zeros(len(area), dtype=bool)
    significant[peak_label] = True
    significant &= area >= BLEND_MIN_AREA_PIX / BLEND_BIN**2
    significant[0] = False

    # the target's segment: on the centre, else the one of the significant peak nearest the centre
    search2 = (BLEND_TARGET_SEARCH_PIX / BLEND_BIN) ** 2
    target = labels[:, middle, middle].copy()
    near = np.flatnonzero(distance2 <= search2)
    first = near[_first_per_stamp(ps[near], distance2[near])]
    missing = first[target[ps[first]] == 0]
    target[ps[missing]] = peak_label[missing]
    # the target's peak: its segment's significant peak nearest the centre if within the search radius (else the
    # centre: a faint target on a brighter neighbour's wing has no peak of its own, and every peak is a neighbour's)
    own = np.flatnonzero((peak_label == target[ps]) & (distance2 <= search2))
    ty, tx = np.full(count, middle), np.full(count, middle)
    first = own[_first_per_stamp(ps[own], distance2[own])]
    ty[ps[first]], tx[ps[first]] = py[first], px[first]
    has_peak = np.zeros(count, dtype=bool)
    has_peak[ps[first]] = True
    th = np.maximum(inner[np.arange(count), ty, tx], BLEND_DETECT_SIGMA)

    # other peaks in the target's segment: neighbours when a real saddle separates them from the target's peak
    others = np.flatnonzero((peak_label == target[ps]) & ((py != ty[ps]) | (px != tx[ps])))
    steps = np.linspace(0.0, 1.0, BLEND_LINE_SAMPLES)
    s = ps[others]
    ly = np.rint(py[others, None] + steps * (ty[s, None] - py[others, None])).astype(np.intp)
    lx = np.rint(px[others, None] + steps * (tx[s, None] - px[others, None])).astype(np.intp)
    saddle = inner[s[:, None], ly, lx].min(axis=1)
    lower = np.minimum(peak_snr[others], th[s])
    dip = lower - saddle
    real = (dip >= BLEND_SADDLE_SIGMA) & (dip >= BLEND_SADDLE_CONTRAST * lower)
    merged = others[real | ~has_peak[s]]

    # the neighbours' pixels (in the aperture, or everywhere for the map): their own segments, and their share of the target's
    aperture = _binned_aperture(cells, centre, SOURCE_APERTURE_PIX / BLEND_BIN)
    region = np.ones_like(aperture) if with_map else aperture
    ay, ax = np.nonzero(region)
    inside = labels.reshape(count, -1) if with_map else labels[:, region]
    mine = (inside == target[:, None]) & (target[:, None] > 0)
    neighbour = significant[inside] & ~mine
    if len(merged):
        theirs, far = _shares_of_merged(merged, ps, py, px, peak_snr, ty, tx, th, ay, ax, mine.shape)
        everywhere = neighbour | (theirs & far & mine)
        neighbour |= theirs & mine
    else:
        everywhere = neighbour
    neighbour = neighbour[:, aperture[region]]
    flux = binned[:, aperture] - background[:, None]
    total = flux.sum(axis=1, dtype=np.float64)
    theirs_flux = np.where(neighbour, flux, 0.0).sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, theirs_flux / total, (theirs_flux > 0).astype(np.float64))
    blend_region = _binned_aperture(cells, centre, BLEND_RADIUS_PIX / BLEND_BIN)[aperture]
    found = np.clip(share, 0.0, 1.0).astype(np.float32), (neighbour & blend_region).any(axis=1)
    return (*found, everywhere.reshape(count, cells, cells)) if with_map else found


def _shares_of_merged(merged, ps, py, px, peak_snr, ty, tx, th, ay, ax, shape) -> tuple[np.ndarray, np.ndarray]:
    """The binned pixels ``(ay, ax)`` each stamp's merged neighbour peaks own, and whether the owning peak lies at least
    ``MAP_MIN_PEAK_DISTANCE_PIX`` from the target's: bool ``shape`` = ``(stamps, pixels)`` each.

    A pixel goes to the peak (the target's ``(ty, tx)`` of height ``th``, or a merged one) of least
    ``d² - 2 w² ln(height)`` (``w = BLEND_OWNER_WIDTH_PIX``); the merged peaks of a stamp are taken in turn (ties go
    to the earlier), all stamps' first merged peaks at once, then their second ones, and so on.
    """
    width2 = 2.0 * (BLEND_OWNER_WIDTH_PIX / BLEND_BIN) ** 2
    far2 = (MAP_MIN_PEAK_DISTANCE_PIX / BLEND_BIN) ** 2
    owners, first, slot = np.unique(ps[merged], return_index=True, return_inverse=True)
    turn = np.arange(len(merged)) - first[slot]  # merged is sorted by stamp: the peak's turn within its stamp
    best = ((ay - ty[owners, None]) ** 2 + (ax - tx[owners, None]) ** 2 - width2 * np.log(th[owners])[:, None]).astype(np.float32)
    theirs, far = np.zeros((len(owners), shape[1]), dtype=bool), np.zeros((len(owners), shape[1]), dtype=bool)
    for step in range(int(turn.max()) + 1):
        now, rows = merged[turn == step], slot[turn == step]
        score = (ay - py[now, None]) ** 2 + (ax - px[now, None]) ** 2 - (width2 * np.log(peak_snr[now]))[:, None]
        closer = score < best[rows]
        best[rows] = np.where(closer, score, best[rows])
        theirs[rows] |= closer
        distant = (py[now] - ty[ps[now]]) ** 2 + (px[now] - tx[ps[now]]) ** 2 >= far2
        far[rows] = np.where(closer, distant[:, None], far[rows])
    out_theirs, out_far = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    out_theirs[owners], out_far[owners] = theirs, far
    return out_theirs, out_far


def _binned(cube: np.ndarray) -> np.ndarray:
    """Sums of ``BLEND_BIN x BLEND_BIN`` pixel blocks of ``(N, H, W)`` stamps (flux is kept), float32.

    Each block row is summed along x, then the row sums are added: for 2 x 2 blocks ``(a + b) + (c + d)``, the
    order (and so the float32 rounding) of NumPy's sum over both axes of the 5-D view, at a tenth of its time.
    """
    size = cube.shape[-1] // BLEND_BIN * BLEND_BIN
    cut = np.asarray(cube[:, :size, :size], dtype=np.float32)
    rows = []
    for dy in range(BLEND_BIN):
        row = cut[:, dy::BLEND_BIN, 0::BLEND_BIN].copy()
        for dx in range(1, BLEND_BIN):
            row += cut[:, dy::BLEND_BIN, dx::BLEND_BIN]
        rows.append(row)
    binned = rows[0]
    for row in rows[1:]:
        binned += row
    return binned


def _binned_aperture(cells: int, centre: float, radius: float) -> np.ndarray:
    """Boolean ``(cells, cells)`` mask of the binned pixels whose centre lies within ``radius`` of ``centre``."""
    yy, xx = np.mgrid[:cells, :cells]
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= radius**2


def _first_per_stamp(stamp: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the entry of least ``key`` of each stamp present in ``stamp``."""
    order = np.lexsort((key, stamp))
    _, first = np.unique(stamp[order], return_index=True)
    return order[first]


def _frame_mask(cells: int) -> np.ndarray:
    """The outer ``NOISE_FRAME_PIX`` frame of a stamp binned to ``cells x cells``."""
    width = NOISE_FRAME_PIX // BLEND_BIN
    frame = np.ones((cells, cells), dtype=bool)
    frame[width:-width, width:-width] = False
    return frame


def aperture_mask(size: int, radius_pix: float) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the circular aperture of ``radius_pix`` pixels centred on pixel ``(size // 2, size // 2)``."""
    centre = size // 2
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= radius_pix**2


def _source_masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The outer frame of the ``size // NOISE_BLOCK_PIX`` block grid, and the central aperture (pixels)."""
    blocks = size // NOISE_BLOCK_PIX
    frame = np.ones((blocks, blocks), dtype=bool)
    inner = NOISE_FRAME_PIX // NOISE_BLOCK_PIX
    frame[inner:-inner, inner:-inner] = False
    return frame, aperture_mask(size, SOURCE_APERTURE_PIX)


def flat_to_stamps(rows, size: int, flags: np.ndarray) -> np.ndarray:
    """Flattened (row-major) stamps to a float32 cube ``(n, size, size)``.

    ``rows`` is an Arrow list array or a sequence of 1-D arrays. A null row or
    one of the wrong length becomes an all-zero stamp flagged
    ``FAILED_VALIDATION`` in ``flags`` (modified in place).
    """
    n = len(rows)
    try:
        import pyarrow as pa

        if isinstance(rows, pa.ChunkedArray):
            rows = rows.combine_chunks()
        if isinstance(rows, pa.Array):
            lengths = rows.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)
            if n and (lengths == size * size).all():
                values = rows.flatten().to_numpy(zero_copy_only=False)
                return np.asarray(values, dtype=np.float32).reshape(n, size, size)
            rows = rows.to_numpy(zero_copy_only=False)
    except ImportError:  # pragma: no cover - pyarrow is a dependency of the project
        pass
    out = np.zeros((n, size, size), dtype=np.float32)
    for i, row in enumerate(rows):
        values = None if row is None else np.asarray(row, dtype=np.float32).ravel()
        if values is None or values.size != size * size:
            flags[i] |= FAILED_VALIDATION
        else:
            out[i] = values.reshape(size, size)
    return out


def fit_to_size(stamp: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Centre-cut or zero-pad one 2-D stamp to ``size x size`` at its native pixel scale.

    The input's central pixel ``(H // 2, W // 2)`` becomes pixel
    ``(size // 2, size // 2)``, the centre of the training stamps; nothing is
    resampled. Returns the float32 stamp and ``RESIZED`` (or 0 if the shape was right).
    """
    stamp = np.asarray(stamp, dtype=np.float32)
    height, width = stamp.shape
    if (height, width) == (size, size):
        return stamp, 0
    out = np.zeros((size, size), dtype=np.float32)
    rows = _overlap(height, size)
    cols = _overlap(width, size)
    out[rows[1], cols[1]] = stamp[rows[0], cols[0]]
    return out, RESIZED


def _overlap(n_in: int, n_out: int) -> tuple[slice, slice]:
    """Source and destination slices placing input pixel ``n_in // 2`` at output pixel ``n_out // 2``."""
    shift = n_out // 2 - n_in // 2  # output index = input index + shift
    start_in, stop_in = max(0, -shift), min(n_in, n_out - shift)
    return slice(start_in, stop_in), slice(start_in + shift, stop_in + shift)


def header_pixel_scale(header) -> float | None:
    """Pixel scale in arcsec/pixel from ``PIXSCALE`` or a celestial CD/CDELT(+PC) matrix (None if absent)."""
    if "PIXSCALE" in header:
        return float(header["PIXSCALE"])
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    if not all(c.startswith(CELESTIAL_PREFIXES) for c in ctypes):
        return None
    if any(f"CD{i}_{j}" in header for i in (1, 2) for j in (1, 2)):
        matrix = np.array([[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)] for i in (1, 2)])
    elif "CDELT1" in header and "CDELT2" in header:
        pc = np.array([[float(header.get(f"PC{i}_{j}", 1.0 if i == j else 0.0)) for j in (1, 2)] for i in (1, 2)])
        matrix = np.diag([float(header["CDELT1"]), float(header["CDELT2"])]) @ pc
    else:
        return None
    return float(np.sqrt(abs(np.linalg.det(matrix))) * 3600.0)


def pixel_scale_flags(header, expected: float) -> int:
    """``BAD_PIXSCALE | FAILED_VALIDATION`` when the header's pixel scale is off by more than 2%, else 0."""
    scale = header_pixel_scale(header)
    if scale is None or abs(scale / expected - 1.0) <= PIXSCALE_TOLERANCE:
        return 0
    return BAD_PIXSCALE | FAILED_VALIDATION


def file_stem(name: str) -> str:
    """A FITS file name without its extension (``H.gf1.fits`` -> ``H.gf1``)."""
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def stamp_hdu(hdul, hdu=None):
    """The HDU holding the stamps: ``hdu`` if given, else the first 2-D/3-D image whose header
    has a celestial WCS or ``PIXSCALE``, else the first 2-D/3-D image."""
    if hdu is not None:
        return hdul[hdu]
    images = [h for h in hdul if h.is_image and h.header.get("NAXIS", 0) in (2, 3)]
    if not images:
        raise ValueError("no 2-D or 3-D image HDU")
    for h in images:
        if "PIXSCALE" in h.header or str(h.header.get("CTYPE1", "")).upper().startswith(CELESTIAL_PREFIXES):
            return h
    return images[0]


def read_fits_stamps(path, size: int, expected_scale: float, hdu=None):
    """Every stamp of one FITS file, fitted to ``size x size``.

    A 2-D image is one stamp with id the file name without extension; a 3-D cube
    gives ids ``NAME:ID`` (``id`` column of a ``LABELS`` table) or ``NAME:ROW``.

    Returns
    -------
    ids : numpy.ndarray of str
    stamps : numpy.ndarray
        float32 ``(n, size, size)``.
    flags : numpy.ndarray
        int32 input flags (``RESIZED``, ``BAD_PIXSCALE | FAILED_VALIDATION``).

    Raises
    ------
    Exception
        Whatever astropy raises for a corrupt or truncated file (a truncated
        file's warning is raised as an error).
    """
    from pathlib import Path

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    path = Path(path)
    name = file_stem(path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        with fits.open(path, memmap=False) as hdul:
            image = stamp_hdu(hdul, hdu)
            if image.data is None:
                raise ValueError("empty image HDU")
            data = np.asarray(image.data, dtype=np.float32)
            scale_flags = pixel_scale_flags(image.header, expected_scale)
            if data.ndim == 2:
                ids, data = np.array([name]), data[None]
            else:
                labels = None
                if "LABELS" in hdul and hdul["LABELS"].data is not None and "id" in hdul["LABELS"].data.columns.names:
                    labels = np.asarray(hdul["LABELS"].data["id"])
                rows = labels if labels is not None and len(labels) == len(data) else np.arange(len(data))
                ids = np.array([f"{name}:{r}" for r in rows])
    stamps = np.empty((len(data), size, size), dtype=np.float32)
    flags = np.full(len(data), scale_flags, dtype=FLAG_DTYPE)
    for i, stamp in enumerate(data):
        stamps[i], extra = fit_to_size(stamp, size)
        flags[i] |= extra
    return ids, stamps, flags


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
