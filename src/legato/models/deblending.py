"""A deblended estimator: a base estimator that sees each stamp with its neighbours removed.

The classical fitter behind the labels masks every neighbour (photutils
segmentation) and fits the target alone; a network trained on isolated
galaxies collapses when a neighbour shares the stamp (docs/scenes.md). A
deblended folder (manifest ``kind: deblended``) holds a base estimator under
``base/`` and the settings of :mod:`legato.io.deblend`: before the base sees a
stamp, the pixels of the neighbours the blend detector finds
(:func:`legato.io.stamp_checks.blend_measurements` with its neighbour map, grown
by ``grow_pix``) are replaced by their point-mirror through the target, else by
seeded sky noise. The ``BLENDED`` flag and ``neighbour_fraction`` are measured on
the stamp as given, so the rows say what the stamp held. Every inference path
(``legato predict``, Spark, the served model) runs the same functions.

The base's intervals were calibrated on isolated galaxies; a deblended stamp
keeps what the detector could not remove (neighbour light under the target's
own pixels), so the rows flagged ``BLENDED`` get their own interval factors
(``blended_calibration``: per parameter and level, measured on labelled stamps
that hold neighbours, never the test set).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from legato.columns import ERROR_SUFFIXES, SERSIC_COLUMNS
from legato.errors import ConfigError
from legato.flags import BLENDED

#: the manifest ``kind`` of a deblended estimator folder
DEBLENDED_KIND = "deblended"


def deblended_inputs(stamps: np.ndarray, neighbour_map: np.ndarray, grow_pix: int) -> np.ndarray:
    """``stamps`` with the neighbours of ``neighbour_map`` (grown by ``grow_pix``) replaced (:mod:`legato.io.deblend`)."""
    from legato.io.deblend import deblend, neighbour_pixels

    return deblend(stamps, neighbour_pixels(neighbour_map, stamps.shape[-1], grow_pix))


def deblended_stamps(stamps: np.ndarray, grow_pix: int) -> np.ndarray:
    """``stamps`` as a deblended estimator's base sees them: the blend detector's neighbour map measured on each stamp
    (:func:`legato.io.stamp_checks.blend_measurements`), then :func:`deblended_inputs`; float32 ``(N, H, W)``."""
    from legato.io.stamp_checks import blend_measurements

    stamps = np.asarray(stamps, dtype=np.float32)
    return deblended_inputs(stamps, blend_measurements(stamps, with_map=True)[2], int(grow_pix))


def widened(columns: dict, calibration: dict | None) -> dict:
    """The rows flagged ``BLENDED`` with their intervals multiplied by ``calibration[level][parameter]``."""
    if not calibration or "flags" not in columns:
        return columns
    blended = (np.asarray(columns["flags"]) & BLENDED) > 0
    out = dict(columns)
    for level, suffix in ERROR_SUFFIXES.items():
        for name, factor in calibration.get(level, {}).items():
            key = f"{name}{suffix}"
            if key in out:
                out[key] = np.where(blended, np.asarray(out[key], dtype=np.float64) * factor, out[key])
    return out


def blended_interval_factors(truth: dict, columns: dict, min_rows: int = 20, levels=(("68", 0.6827), ("95", 0.9545))) -> dict:
    """Per level and parameter, the factor that makes the rows' intervals hold the nominal share of ``truth``.

    Parameters
    ----------
    truth : dict
        Reference values per column (``mag, re_arcsec, n, ellipticity``), the rows of ``columns``.
    columns : dict
        The estimator's rows on those stamps, with ``<column>_err`` / ``<column>_err95`` half-widths.
    min_rows : int
        Fewest usable rows per parameter.
    levels : tuple of (str, float)
        Interval name and nominal coverage.

    Returns
    -------
    dict
        ``{"68": {column: factor}, "95": {...}, "rows": N}``: the quantile of ``|error| / half-width`` at the nominal level.
    """
    out: dict = {"rows": 0}
    for level, nominal in levels:
        out[level] = {}
        for name in SERSIC_COLUMNS:
            ratio = np.abs(np.asarray(truth[name], float) - np.asarray(columns[name], float)) / np.asarray(
                columns[f"{name}{ERROR_SUFFIXES[level]}"], float
            )
            ratio = ratio[np.isfinite(ratio)]
            fewest = max(min_rows, 1)
            if len(ratio) < fewest:
                raise ConfigError(f"calibrating the blended intervals needs at least {fewest} usable rows, got {len(ratio)} for {name}")
            out[level][name] = round(float(np.quantile(ratio, nominal)), 4)
            out["rows"] = max(out["rows"], len(ratio))
    return out


def write_deblended_estimator(base: str | Path, out: str | Path, grow_pix: int, blended_calibration: dict | None = None, info=None) -> Path:
    """Write a deblended estimator folder: ``base/`` (the base estimator, copied with its lineage) and the manifest.

    Parameters
    ----------
    base : str or Path
        A plain or refined estimator with input checks (it must flag blends).
    out : str or Path
        The folder, written whole or not at all.
    grow_pix : int
        Pixels the neighbours' segments are grown by (>= 0).
    blended_calibration : dict, optional
        :func:`blended_interval_factors` for the rows flagged ``BLENDED``.
    info : dict, optional
        More of the recipe (the calibration set, its size), recorded in the manifest.

    Raises
    ------
    ConfigError
        On a routed or deblended base, a base without input checks, or a negative growth.
    """
    from legato.io.folders import publish_folder, staging_with
    from legato.models.estimator import MANIFEST, read_manifest

    base = Path(base)
    manifest = read_manifest(base)
    if manifest.get("kind") in ("routed", DEBLENDED_KIND) or not manifest.get("input_range"):
        raise ConfigError(f"{base}: a deblended estimator needs a plain or refined estimator that flags blends")
    if int(grow_pix) < 0:
        raise ConfigError(f"grow_pix must be >= 0, got {grow_pix}")
    out = Path(out)
    staging, lineage = staging_with({"base": base}, out)
    deblended = {
        "kind": DEBLENDED_KIND,
        "stamp_size": manifest["stamp_size"],
        "base": "base",
        "deblend": {"grow_pix": int(grow_pix), "fill": "point-mirror, else sky noise"},
        "blended_calibration": blended_calibration,
        "architecture": f"{manifest.get('architecture', 'production')}+deblended",
        "training": {
            "recipe": {"base": str(base), "deblend": True, "base_domain": _base_domain(manifest), **(info or {})},
            "lineage": lineage["base"],
        },
        **{key: manifest[key] for key in ("psf_input", "input_range", "uncertainty", "reference_sigma") if key in manifest},
        "targets": list(SERSIC_COLUMNS),
    }
    (staging / MANIFEST).write_text(json.dumps(deblended, indent=2))
    publish_folder(staging, out)
    return out / MANIFEST


def _base_domain(manifest: dict) -> str:
    """The base's ``training_domain`` (:func:`legato.tracking.training_domain` of its recipe)."""
    from legato.tracking import training_domain

    return training_domain(manifest.get("training", {}).get("recipe", {}))
