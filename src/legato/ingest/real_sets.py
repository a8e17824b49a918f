"""Real data into the project's stamp-set format (``legato ingest``).

Two formats users have:

- **GALFIT output blocks** (:mod:`legato.io.galfit`): the target is the Sérsic
  component nearest the block centre; its fitted sky is subtracted; the stamp is
  cut (or padded) to the network's size around the target's fitted centre.
- **a mosaic plus a van der Wel-format GALFIT catalogue** (NUMBER RA DEC f mag
  dmag re dre n dn q dq pa dpa sn): sky to pixel through the mosaic's WCS, stamps
  cut with ``Cutout2D`` (:func:`legato.io.mosaic.cut_stamps`); the catalogue's
  fit flag ``f`` is kept.

Real stamps are treated as survey data:

- **Noise texture.** Drizzled CANDELS F160W noise is correlated (on the 15
  bundled UDS blocks' residuals, where the blocks have data: per-pixel sigma
  0.005-0.01 electrons/s, neighbour-pixel autocorrelation 0.52-0.65 at 1 pixel,
  0.04-0.21 at 2 pixels). Each stamp's noise is measured with
  :func:`legato.analysis.noise_texture.noise_statistics`: on the GALFIT residual
  of a block (on the block's sky pixels, outside the sources found by
  :func:`legato.analysis.segmentation.segment_stamp`, when it has no residual),
  on the stamp's sky pixels for a mosaic; pixels without data
  (:func:`blank_pixels`: NaN, or exactly 0 as CANDELS blanks uncovered areas)
  are left out.
- **Padding.** Pixels beyond the observed area (a block smaller than the stamp, a
  source near the mosaic edge) or without data are filled with Gaussian noise
  of the measured per-pixel sigma *and* lag-1 correlation
  (:func:`legato.simulation.noise.correlated_noise` with the kernel of
  :func:`legato.analysis.noise_texture.kernel_sigma_for_correlation`), never with
  zeros or white noise, so the padded band has the texture of the real sky next
  to it; padded rows carry the ``padded`` flag (bit 8).
- **Neighbours.** Sources other than the target are found on the stamp with
  :func:`~legato.analysis.segmentation.segment_stamp` at the measured sigma; the
  mask is stored with the stamps (the ``NBRMASK`` extension, read by
  :func:`legato.io.stamps.read_stamp_masks`).

Both write a stamp set (:mod:`legato.io.stamps`) whose labels use the
simulator's columns and units (``mag`` AB, ``re_arcsec`` semi-major, ``n``,
``q``, ``ellipticity``, ``pa_deg``) plus their errors and flags, and per stamp
``noise_sigma`` (electron/s, per pixel), ``noise_correlation_1pix`` and
``noise_correlation_2pix`` (normalised autocorrelation at 1 and 2 pixels),
``padded_fraction`` (fraction of the stamp's pixels filled with noise),
``neighbour_fraction`` (fraction of the stamp's pixels masked as neighbours)
and ``n_neighbours``. A file that cannot be used is reported with the reason
and skipped; the others are ingested.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from legato.analysis.noise_texture import NoiseStatistics, kernel_sigma_for_measured_correlation, noise_statistics
from legato.analysis.segmentation import StampSegmentation, segment_stamp
from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB, ellipticity
from legato.errors import DataError
from legato.io.galfit import GALFIT_FLAG_NAMES, read_galfit_block, target_flags
from legato.io.stamps import StampSetMeta, write_stamp_set
from legato.simulation.noise import correlated_noise
from legato.stats import robust_sigma

INGEST_PADDED = 8  # the stamp extends beyond the observed block (filled with correlated noise)
INGEST_FLAG_NAMES = {**GALFIT_FLAG_NAMES, INGEST_PADDED: "padded"}
NOISE_SIGMA_UNIT = u.electron / u.s
MIN_SKY_PIXELS = 50  # fewer sky pixels than this: the noise is measured on every finite pixel
NOISE_COLUMNS = ("noise_sigma", "noise_correlation_1pix", "noise_correlation_2pix")


def band_of_zeropoint(zeropoint: float, tolerance: float = 1e-3) -> str:
    """The band whose AB zeropoint this is (``unknown`` when none matches)."""
    for band, value in ZEROPOINT_AB.items():
        if abs(value - zeropoint) < tolerance:
            return band
    return "unknown"


def pixel_scale_of(header, default: float = PIXEL_SCALE_ARCSEC) -> float:
    """Pixel scale (arcsec/pixel) from a header's CD matrix or CDELT keywords, or ``default`` when it has neither."""
    if all(k in header for k in ("CD1_1", "CD2_2")):
        cd = np.array([[header["CD1_1"], header.get("CD1_2", 0.0)], [header.get("CD2_1", 0.0), header["CD2_2"]]], dtype=float)
        return float(np.sqrt(abs(np.linalg.det(cd))) * 3600.0)
    if all(k in header for k in ("CDELT1", "CDELT2")):
        return float(np.sqrt(abs(header["CDELT1"] * header["CDELT2"])) * 3600.0)
    return default


def block_id(path: Path, fallback: int) -> int:
    """The number in a block's file name (``H.gf12.fits`` -> 12), else ``fallback``."""
    numbers = re.findall(r"\d+", path.name)
    return int(numbers[-1]) if numbers else fallback


def blank_pixels(image: np.ndarray) -> np.ndarray:
    """No-data pixels of an observed image: NaN/inf, or exactly 0.

    CANDELS GALFIT blocks and mosaics carry the areas without data (beyond the
    survey's coverage) as exactly 0 electrons/s; 12 of the 15 bundled UDS blocks
    have such an area (22-45 % of their pixels). Observed, noisy, un-subtracted
    pixels are never exactly 0, so these are left out of the noise measurement
    and padded like the pixels beyond the block.
    """
    image = np.asarray(image)
    return ~np.isfinite(image) | (image == 0.0)


def sky_noise_statistics(image: np.ndarray, sigma: float | None = None) -> NoiseStatistics:
    """Noise of an image measured on its sky pixels (outside every source found by :func:`segment_stamp`).

    Parameters
    ----------
    image : numpy.ndarray
        2-D background-subtracted image, electrons/s; NaN pixels (beyond an edge) are left out.
    sigma : float, optional
        First guess of the per-pixel noise for the detection, electrons/s; the
        robust sigma (NMAD) of the image when not given.

    Returns
    -------
    NoiseStatistics
        Per-pixel sigma (electrons/s) and autocorrelation at lags 1 and 2 pixels;
        measured on every finite pixel when fewer than :data:`MIN_SKY_PIXELS` are sky.
    """
    image = np.asarray(image, dtype=np.float64)
    sigma = robust_sigma(image) if sigma is None else float(sigma)
    mask = None
    if np.isfinite(sigma) and sigma > 0:
        sources = segment_stamp(image, sigma).source_mask
        if np.sum(~sources & np.isfinite(image)) >= MIN_SKY_PIXELS:
            mask = sources
    return noise_statistics(image, mask)


def pad_with_noise(stamp: np.ndarray, outside: np.ndarray, noise: NoiseStatistics, rng: np.random.Generator) -> None:
    """Fill the ``outside`` pixels of ``stamp`` (in place) with noise of the measured sigma and lag-1 correlation.

    A stamp-sized field is drawn with :func:`legato.simulation.noise.correlated_noise`
    and only its ``outside`` pixels are copied, so the padded band has the texture
    of a whole field. A noise level that is not a positive number pads with zeros.
    """
    sigma = noise.sigma if np.isfinite(noise.sigma) and noise.sigma > 0 else 0.0
    if sigma == 0.0:
        stamp[outside] = 0.0
        return
    field = correlated_noise(stamp.shape, sigma, kernel_sigma_for_measured_correlation(noise.correlation.get(1, float("nan"))), rng)
    stamp[outside] = field[outside]


def neighbour_segmentation(stamp: np.ndarray, sigma: float) -> StampSegmentation:
    """Sources of a stamp at noise ``sigma`` (electrons/s; the border NMAD when not positive); nothing found if neither is usable."""
    try:
        return segment_stamp(stamp, sigma if np.isfinite(sigma) and sigma > 0 else None)
    except ValueError:
        empty = np.zeros(np.shape(stamp), dtype=bool)
        return StampSegmentation(np.zeros(np.shape(stamp), dtype=np.int32), 0, empty, empty)


def noise_columns(noise: NoiseStatistics) -> dict:
    """Label columns of a stamp's noise: ``noise_sigma`` (electrons/s), ``noise_correlation_1pix``, ``noise_correlation_2pix``."""
    return {
        "noise_sigma": float(noise.sigma),
        "noise_correlation_1pix": float(noise.correlation.get(1, float("nan"))),
        "noise_correlation_2pix": float(noise.correlation.get(2, float("nan"))),
    }


def neighbour_columns(segmentation: StampSegmentation) -> dict:
    """Label columns of a stamp's neighbours: ``neighbour_fraction`` (of the stamp's pixels) and ``n_neighbours``."""
    return {"neighbour_fraction": float(np.mean(segmentation.neighbour_mask)), "n_neighbours": int(segmentation.n_neighbours)}


def galfit_stamp(path: str | Path, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict, float, float]:
    """One GALFIT block as a ``size`` x ``size`` stamp centred on its target, and the target's labels.

    The block's noise is measured on its GALFIT residual where the block has
    data (on the image's sky pixels when it has no residual); pixels beyond the
    block or without data (:func:`blank_pixels`) are filled with noise of that
    sigma and lag-1 correlation (:func:`pad_with_noise`) and set the ``padded`` flag.

    Parameters
    ----------
    path : str or Path
        GALFIT output block.
    size : int
        Stamp side, pixels.
    rng : numpy.random.Generator
        Source of the padding noise (drawn from only when the stamp is padded).

    Returns
    -------
    stamp : numpy.ndarray
        float32, sky-subtracted, electrons/s.
    labels : dict
        ``mag``, ``re_arcsec``, ``n``, ``q``, ``ellipticity``, ``pa_deg``, their
        ``*_err``, ``flags``, ``padded_fraction`` (of the stamp's pixels), ``padded_near_target`` (of the pixels within two
        effective radii), and the
        block's ``noise_sigma`` (electrons/s), ``noise_correlation_1pix``,
        ``noise_correlation_2pix``.
    zeropoint : float
    pixel_scale : float
        arcsec / pixel.

    Raises
    ------
    DataError
        When the block cannot be read, has no data or no usable target (the message names the file).
    """
    from legato.io.mosaic import cut_stamps

    path = Path(path)
    block = read_galfit_block(path)
    target = block.target()
    scale = pixel_scale_of(block.header)
    blank = blank_pixels(block.image)
    if blank.all():
        raise DataError(f"{path.name}: the observed image has no data (every pixel is 0)")
    image = np.where(blank, np.nan, block.image - block.sky())
    if block.residual is not None:
        noise = noise_statistics(block.residual, mask=blank if np.sum(~blank) >= MIN_SKY_PIXELS else None)
    else:
        noise = sky_noise_statistics(image)
    position = [[target["XC"].value - 1.0, target["YC"].value - 1.0]]  # GALFIT is 1-based
    stamps, _ = cut_stamps(image, None, position, size, fill_value=np.nan)
    stamp = stamps[0].astype(np.float64)
    outside = ~np.isfinite(stamp)
    flags = target_flags(block, target)
    if outside.any():
        pad_with_noise(stamp, outside, noise, rng)
        flags |= INGEST_PADDED
    q = target["AR"].value
    labels = {
        "mag": target["MAG"].value,
        "mag_err": target["MAG"].error,
        "re_arcsec": target["RE"].value * scale,
        "re_err_arcsec": target["RE"].error * scale,
        "n": target["N"].value,
        "n_err": target["N"].error,
        "q": q,
        "q_err": target["AR"].error,
        "ellipticity": float(ellipticity(q)),
        "pa_deg": target["PA"].value,
        "flags": flags,
        "padded_fraction": float(np.mean(outside)),
        "padded_near_target": padded_near_target(outside, target["RE"].value, q),
        **noise_columns(noise),
    }
    return stamp.astype(np.float32), labels, block.zeropoint, scale


TARGET_RADII = 2.0  # "near the target": inside the ellipse of twice its effective radius (at least 4 pixels)


def padded_near_target(padded: np.ndarray, re_pix: float, q: float) -> float:
    """Fraction of the pixels within ``TARGET_RADII`` effective radii of the stamp centre that hold no data (padding).

    A target cut by a no-data band loses light the padding cannot restore: its
    stamp does not show the galaxy its GALFIT labels describe.

    Parameters
    ----------
    padded : numpy.ndarray of bool
        Padded (no-data) pixels of the stamp.
    re_pix : float
        Target's semi-major effective radius, pixels.
    q : float
        Its axis ratio (the ellipse is taken circular in area: radius ``re * sqrt(q)``).
    """
    ny, nx = padded.shape
    yy, xx = np.indices(padded.shape)
    radius = max(TARGET_RADII * float(re_pix) * np.sqrt(max(float(q), 0.05)), 4.0)
    near = np.hypot(yy - ny // 2, xx - nx // 2) <= radius
    return float(np.mean(padded[near]))


def labels_table(rows: list[dict]) -> Table:
    """Label rows with the simulator's units."""
    table = Table(rows=rows)
    units = {
        "mag": u.mag,
        "mag_err": u.mag,
        "re_arcsec": u.arcsec,
        "re_err_arcsec": u.arcsec,
        "pa_deg": u.deg,
        "noise_sigma": NOISE_SIGMA_UNIT,
    }
    for name, unit in units.items():
        if name in table.colnames:
            table[name].unit = unit
    return table


def ingest_galfit_blocks(paths, out_dir: str | Path, size: int = 64, seed: int = 0) -> dict:
    """Ingest GALFIT blocks into one stamp set; unusable files are reported and skipped.

    Parameters
    ----------
    paths : iterable of Path
        Block files (one band).
    out_dir : str or Path
        Stamp-set folder to write.
    size : int
        Stamp side, pixels.
    seed : int
        Seed of the noise that pads small blocks.

    Returns
    -------
    dict
        ``ingested``, ``skipped`` (file -> reason), flag counts, band, and the
        median noise of the stamps (``noise``, see :func:`_report`).

    Raises
    ------
    DataError
        When no file could be ingested.
    """
    paths = sorted(Path(p) for p in paths)
    if not paths:
        raise DataError("no GALFIT block files to ingest")
    rng = np.random.default_rng(seed)
    stamps, masks, rows, skipped = [], [], [], {}
    zeropoint = scale = None
    for k, path in enumerate(paths):
        try:
            stamp, labels, zp, pixel_scale = galfit_stamp(path, size, rng)
        except DataError as exc:
            skipped[path.name] = str(exc)
            continue
        if zeropoint is not None and abs(zp - zeropoint) > 1e-3:
            skipped[path.name] = f"{path.name}: zeropoint {zp} differs from the set's {zeropoint} (another band?)"
            continue
        zeropoint = zp if zeropoint is None else zeropoint
        scale = pixel_scale if scale is None else scale
        segmentation = neighbour_segmentation(stamp, labels["noise_sigma"])
        stamps.append(stamp)
        masks.append(segmentation.neighbour_mask)
        rows.append({"id": block_id(path, k), "source_file": path.name, **labels, **neighbour_columns(segmentation)})
    if not stamps:
        raise DataError(f"none of the {len(paths)} GALFIT blocks could be ingested: " + "; ".join(skipped.values()))
    table = labels_table(rows)
    band = band_of_zeropoint(zeropoint)
    meta = StampSetMeta(
        pixel_scale=scale,
        zeropoint=zeropoint,
        band=band,
        psf_id="unknown",
        domain="real-galfit-blocks",
        extra={"LABELS": ("galfit", "labels from the GALFIT blocks")},
    )
    write_stamp_set(out_dir, np.stack(stamps), table, meta, masks=np.stack(masks))
    return _report(table, skipped, band, out_dir)


def _median(values) -> float | None:
    """Median of the finite values (None when there is none, so the JSON report stays valid)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return round(float(np.median(values)), 6) if values.size else None


def _report(table: Table, skipped: dict, band: str, out_dir) -> dict:
    """Summary of an ingestion.

    Returns
    -------
    dict
        ``ingested``, ``skipped`` (file or source -> reason), ``band``, ``out``,
        ``flagged`` (flag name -> count) and ``noise``: the medians over the
        ingested stamps of ``noise_sigma_electron_per_s`` (per-pixel sigma),
        ``noise_correlation_1pix``, ``noise_correlation_2pix`` and
        ``neighbour_fraction`` (None where no stamp has a finite value).
    """
    flags = np.asarray(table["flags"], dtype=np.int64)
    noise = {}
    for column, key in (
        ("noise_sigma", "noise_sigma_electron_per_s"),
        ("noise_correlation_1pix", "noise_correlation_1pix"),
        ("noise_correlation_2pix", "noise_correlation_2pix"),
        ("neighbour_fraction", "neighbour_fraction"),
    ):
        if column in table.colnames:
            noise[key] = _median(table[column])
    return {
        "ingested": len(table),
        "skipped": skipped,
        "band": band,
        "out": str(out_dir),
        "flagged": {name: int(np.sum((flags & bit) > 0)) for bit, name in INGEST_FLAG_NAMES.items()},
        "noise": noise,
    }


def ingest_mosaic(mosaic: str | Path, catalogue: str | Path, out_dir: str | Path, size: int = 64, hdu=None, seed: int = 0) -> dict:
    """Ingest the sources of a van der Wel-format GALFIT catalogue from a mosaic with a WCS.

    Sources off the mosaic are reported and skipped; sources near its edge are
    kept with the ``NEAR_EDGE`` bit of :class:`~legato.flags.StampFlag`
    in ``stamp_flags`` (and the ``padded`` bit in ``flags``), their pixels beyond
    the edge filled with noise of the stamp's measured sigma and lag-1 correlation;
    the catalogue's fit flag is kept as ``f``. Each stamp's noise (``noise_sigma``
    in electrons/s, ``noise_correlation_1pix``, ``noise_correlation_2pix``) is
    measured on its sky pixels, outside every source found by
    :func:`~legato.analysis.segmentation.segment_stamp`; its neighbour mask is
    stored with the stamps.

    Parameters
    ----------
    mosaic : str or Path
        Mosaic FITS image with a celestial WCS, electrons/s, background-subtracted.
    catalogue : str or Path
        GALFIT catalogue in the van der Wel format.
    out_dir : str or Path
        Stamp-set folder to write.
    size : int
        Stamp side, pixels.
    hdu : int or str, optional
        HDU of the mosaic image (found automatically when not given).
    seed : int
        Seed of the noise that pads stamps beyond the mosaic's edge.

    Returns
    -------
    dict
        ``ingested``, ``skipped`` (source -> reason), band, flag counts, and the
        median noise of the stamps (``noise``, see :func:`_report`).
    """
    from legato.catalog.vanderwel import read_vanderwel_catalog
    from legato.flags import StampFlag
    from legato.io.mosaic import catalog_positions, cut_stamps, read_mosaic

    image, wcs, header = read_mosaic(mosaic, hdu)
    if wcs is None:
        raise DataError(f"{Path(mosaic).name}: the mosaic has no celestial WCS to place RA/Dec sources")
    table = read_vanderwel_catalog(catalogue)  # checks the 15 columns
    # NaN beyond the mosaic's edge (not a failure: only NaN inside the mosaic is), so those pixels stay out of the noise
    stamps, stamp_flags = cut_stamps(image, wcs, catalog_positions(table, wcs, ra="RA", dec="DEC"), size, fill_value=np.nan)
    unusable = (stamp_flags & int(StampFlag.FAILED_VALIDATION)) > 0
    skipped = {
        str(number): ("off the mosaic" if flag & int(StampFlag.OFF_IMAGE) else "NaN/inf pixels in the stamp")
        for number, flag in zip(table["NUMBER"][unusable], stamp_flags[unusable])
    }
    keep = ~unusable
    if not keep.any():
        raise DataError(f"no catalogue source of {Path(catalogue).name} lies on {Path(mosaic).name}")
    rng = np.random.default_rng(seed)
    kept = stamps[keep].astype(np.float64)
    masks, noise_rows = [], []
    padded = np.zeros(len(kept), dtype=bool)
    for k, stamp in enumerate(kept):
        outside = blank_pixels(stamp)  # beyond the mosaic's edge (NaN) or without data (0)
        stamp[outside] = np.nan
        noise = sky_noise_statistics(stamp)
        if outside.any():
            pad_with_noise(stamp, outside, noise, rng)
            padded[k] = True
        segmentation = neighbour_segmentation(stamp, noise.sigma)
        masks.append(segmentation.neighbour_mask)
        noise_rows.append({"padded_fraction": float(np.mean(outside)), **noise_columns(noise), **neighbour_columns(segmentation)})
    q = np.asarray(table["q"], dtype=float)[keep]
    labels = Table()
    labels["id"] = np.asarray(table["NUMBER"], dtype=np.int64)[keep]
    labels["ra"] = np.asarray(table["RA"], dtype=float)[keep] * u.deg
    labels["dec"] = np.asarray(table["DEC"], dtype=float)[keep] * u.deg
    labels["mag"] = np.asarray(table["mag"], dtype=float)[keep] * u.mag
    labels["re_arcsec"] = np.asarray(table["re"], dtype=float)[keep] * u.arcsec
    labels["n"] = np.asarray(table["n"], dtype=float)[keep]
    labels["q"] = q
    labels["ellipticity"] = ellipticity(q)
    labels["pa_deg"] = np.asarray(table["pa"], dtype=float)[keep] * u.deg
    for name in ("dmag", "dre", "dn", "dq"):
        if name in table.colnames:
            labels[name] = np.asarray(table[name], dtype=float)[keep]
    labels["f"] = np.asarray(table["f"], dtype=np.int64)[keep]
    labels["flags"] = np.where(labels["f"] > 0, 1, 0) | np.where(padded, INGEST_PADDED, 0)
    labels["padded_fraction"] = np.array([row["padded_fraction"] for row in noise_rows], dtype=float)
    labels["noise_sigma"] = np.array([row["noise_sigma"] for row in noise_rows]) * NOISE_SIGMA_UNIT
    for name in ("noise_correlation_1pix", "noise_correlation_2pix", "neighbour_fraction"):
        labels[name] = np.array([row[name] for row in noise_rows], dtype=float)
    labels["n_neighbours"] = np.array([row["n_neighbours"] for row in noise_rows], dtype=np.int64)
    zeropoint = float(header.get("MAGZPT", header.get("ZP", ZEROPOINT_AB["F160W"])))
    band = band_of_zeropoint(zeropoint)
    meta = StampSetMeta(
        pixel_scale=pixel_scale_of(header),
        zeropoint=zeropoint,
        band=band,
        psf_id="unknown",
        domain="real-mosaic",
        extra={"LABELS": ("galfit-catalogue", "labels from the GALFIT catalogue")},
    )
    write_stamp_set(out_dir, kept.astype(np.float32), labels, meta, masks=np.stack(masks))
    report = _report(labels, skipped, band, out_dir)
    report["flagged"] = {
        "catalogue_flag": int(np.sum(labels["f"] > 0)),
        "near_edge": int(np.sum((stamp_flags[keep] & int(StampFlag.NEAR_EDGE)) > 0)),
    }
    return report
