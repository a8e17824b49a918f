"""Real data into the project's stamp-set format (``legato ingest``).

Two formats users have:

- **GALFIT output blocks** (:mod:`legato.io.galfit`): the target is the Sérsic
  component nearest the block centre; its fitted sky is subtracted; the stamp is
  cut (or padded) to the network's size around the target's fitted centre.
  Padding uses Gaussian noise at the block's own noise level (the NMAD of the
  GALFIT residual), never zeros, so a padded stamp keeps the sky texture the
  network was trained on; padded rows carry the ``padded`` flag.
- **a mosaic plus a van der Wel-format GALFIT catalogue** (NUMBER RA DEC f mag
  dmag re dre n dn q dq pa dpa sn): sky to pixel through the mosaic's WCS, stamps
  cut with ``Cutout2D`` (:func:`legato.io.mosaic.cut_stamps`); the catalogue's
  fit flag ``f`` is kept.

Both write a stamp set (:mod:`legato.io.stamps`) whose labels use the
simulator's columns and units (``mag`` AB, ``re_arcsec`` semi-major, ``n``,
``q``, ``ellipticity``, ``pa_deg``) plus their errors and flags. A file that
cannot be used is reported with the reason and skipped; the others are ingested.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB, ellipticity
from legato.errors import DataError
from legato.evaluation.metrics import robust_sigma
from legato.io.galfit import GALFIT_FLAG_NAMES, read_galfit_block, target_flags
from legato.io.stamps import StampSetMeta, write_stamp_set

INGEST_PADDED = 8  # the stamp extends beyond the observed block (filled with noise)
INGEST_FLAG_NAMES = {**GALFIT_FLAG_NAMES, INGEST_PADDED: "padded"}


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


def galfit_stamp(path: str | Path, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict, float, float]:
    """One GALFIT block as a ``size`` x ``size`` stamp centred on its target, and the target's labels.

    Returns
    -------
    stamp : numpy.ndarray
        float32, sky-subtracted, electrons/s.
    labels : dict
        ``mag``, ``re_arcsec``, ``n``, ``q``, ``ellipticity``, ``pa_deg``, their ``*_err``, ``flags``.
    zeropoint : float
    pixel_scale : float
        arcsec / pixel.

    Raises
    ------
    DataError
        When the block cannot be read or has no usable target (the message names the file).
    """
    from legato.io.mosaic import cut_stamps

    path = Path(path)
    block = read_galfit_block(path)
    target = block.target()
    scale = pixel_scale_of(block.header)
    image = block.image - block.sky()
    noise = robust_sigma(block.residual) if block.residual is not None else robust_sigma(image)
    position = [[target["XC"].value - 1.0, target["YC"].value - 1.0]]  # GALFIT is 1-based
    stamps, _ = cut_stamps(image, None, position, size, fill_value=np.nan)
    stamp = stamps[0].astype(np.float64)
    outside = ~np.isfinite(stamp)
    flags = target_flags(block, target)
    if outside.any():
        stamp[outside] = rng.normal(0.0, noise if np.isfinite(noise) and noise > 0 else 0.0, int(outside.sum()))
        flags |= INGEST_PADDED
    q = target["AR"].value
    labels = {
        "mag": target["MAG"].value, "mag_err": target["MAG"].error,
        "re_arcsec": target["RE"].value * scale, "re_err_arcsec": target["RE"].error * scale,
        "n": target["N"].value, "n_err": target["N"].error,
        "q": q, "q_err": target["AR"].error, "ellipticity": float(ellipticity(q)),
        "pa_deg": target["PA"].value,
        "flags": flags,
    }
    return stamp.astype(np.float32), labels, block.zeropoint, scale


def labels_table(rows: list[dict]) -> Table:
    """Label rows with the simulator's units."""
    table = Table(rows=rows)
    for name, unit in {"mag": u.mag, "mag_err": u.mag, "re_arcsec": u.arcsec, "re_err_arcsec": u.arcsec, "pa_deg": u.deg}.items():
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
        ``ingested``, ``skipped`` (file -> reason), flag counts, band.

    Raises
    ------
    DataError
        When no file could be ingested.
    """
    paths = sorted(Path(p) for p in paths)
    if not paths:
        raise DataError("no GALFIT block files to ingest")
    rng = np.random.default_rng(seed)
    stamps, rows, skipped = [], [], {}
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
        stamps.append(stamp)
        rows.append({"id": block_id(path, k), "source_file": path.name, **labels})
    if not stamps:
        raise DataError(f"none of the {len(paths)} GALFIT blocks could be ingested: " + "; ".join(skipped.values()))
    table = labels_table(rows)
    band = band_of_zeropoint(zeropoint)
    meta = StampSetMeta(pixel_scale=scale, zeropoint=zeropoint, band=band, psf_id="unknown", domain="real-galfit-blocks", extra={"LABELS": ("galfit", "labels from the GALFIT blocks")})
    write_stamp_set(out_dir, np.stack(stamps), table, meta)
    return _report(table, skipped, band, out_dir)


def _report(table: Table, skipped: dict, band: str, out_dir) -> dict:
    flags = np.asarray(table["flags"], dtype=np.int64)
    return {
        "ingested": len(table),
        "skipped": skipped,
        "band": band,
        "out": str(out_dir),
        "flagged": {name: int(np.sum((flags & bit) > 0)) for bit, name in INGEST_FLAG_NAMES.items()},
    }


def ingest_mosaic(mosaic: str | Path, catalogue: str | Path, out_dir: str | Path, size: int = 64, hdu=None) -> dict:
    """Ingest the sources of a van der Wel-format GALFIT catalogue from a mosaic with a WCS.

    Sources off the mosaic are reported and skipped; sources near its edge are
    kept with the ``NEAR_EDGE`` bit of :class:`~legato.inference.flags.StampFlag`
    in ``stamp_flags``; the catalogue's fit flag is kept as ``f``.

    Returns
    -------
    dict
        ``ingested``, ``skipped`` (source -> reason), band, flag counts.
    """
    from legato.catalog.vanderwel import read_vanderwel_catalog
    from legato.inference.flags import StampFlag
    from legato.io.mosaic import catalog_positions, cut_stamps, read_mosaic

    image, wcs, header = read_mosaic(mosaic, hdu)
    if wcs is None:
        raise DataError(f"{Path(mosaic).name}: the mosaic has no celestial WCS to place RA/Dec sources")
    table = read_vanderwel_catalog(catalogue)  # checks the 15 columns
    stamps, stamp_flags = cut_stamps(image, wcs, catalog_positions(table, wcs, ra="RA", dec="DEC"), size)
    unusable = (stamp_flags & int(StampFlag.FAILED_VALIDATION)) > 0
    skipped = {
        str(number): ("off the mosaic" if flag & int(StampFlag.OFF_IMAGE) else "NaN/inf pixels in the stamp")
        for number, flag in zip(table["NUMBER"][unusable], stamp_flags[unusable])
    }
    keep = ~unusable
    if not keep.any():
        raise DataError(f"no catalogue source of {Path(catalogue).name} lies on {Path(mosaic).name}")
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
    labels["flags"] = np.where(labels["f"] > 0, 1, 0) | np.where(stamp_flags[keep] & int(StampFlag.NEAR_EDGE), INGEST_PADDED, 0)
    zeropoint = float(header.get("MAGZPT", header.get("ZP", ZEROPOINT_AB["F160W"])))
    band = band_of_zeropoint(zeropoint)
    meta = StampSetMeta(pixel_scale=pixel_scale_of(header), zeropoint=zeropoint, band=band, psf_id="unknown", domain="real-mosaic", extra={"LABELS": ("galfit-catalogue", "labels from the GALFIT catalogue")})
    write_stamp_set(out_dir, stamps[keep], labels, meta)
    report = _report(labels, skipped, band, out_dir)
    report["flagged"] = {"catalogue_flag": int(np.sum(labels["f"] > 0)), "near_edge": int(np.sum((stamp_flags[keep] & int(StampFlag.NEAR_EDGE)) > 0))}
    return report
