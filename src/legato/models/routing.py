"""A routed estimator: two estimator folders, each stamp measured by the one trained for it.

The F160W production network is the most precise on isolated galaxies; the
scene-trained, PSF-conditioned network measures targets that share the stamp
with neighbours and takes every band's PSF (docs/scenes.md). A routed folder
holds both (``isolated/`` and ``blended/``) and a manifest of kind ``routed``:

- a stamp the blend detector flags ``BLENDED`` (:func:`legato.io.stamp_checks.blend_measurements`,
  the same measurement on the stamp in every inference path) goes to ``blended``;
- so does a stamp where the two estimators disagree by more than ``disagreement_sigma`` of their
  combined intervals on the magnitude or the radius (a neighbour the detector misses);
- so does every stamp of a call whose PSF is not the ``isolated`` estimator's own (another band,
  a PSF file, another zeropoint): an estimator without a PSF input knows its training PSF only;
- every other stamp goes to ``isolated``.

Each route keeps its own calibrated intervals and input checks. The rows carry the
columns of the ``blended`` estimator (a PSF-conditioned one); the PSF columns of the
rows measured by an estimator without a PSF input are the call's PSF.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from legato.errors import ConfigError

#: the manifest ``kind`` of a routed estimator folder
ROUTED_KIND = "routed"
#: route name -> sub-folder of a routed estimator
ROUTES = ("isolated", "blended")
#: the estimates whose disagreement between the routes sends a stamp to the ``blended`` route
DISAGREEMENT_COLUMNS = ("mag", "re_arcsec")


def disagreement(isolated: dict, blended: dict, names: tuple[str, ...] = DISAGREEMENT_COLUMNS) -> np.ndarray:
    """How far apart the two routes' estimates are, in their combined 68% half-widths (the largest over ``names``).

    A neighbour the blend detector misses (too close for a saddle, under the target's own pixels) pulls the
    isolated-galaxy network and leaves the scene-trained one: the two then disagree by many sigmas.

    Parameters
    ----------
    isolated, blended : dict
        Both routes' predictions on the same stamps (with ``<name>_err`` columns).
    names : tuple of str
        Columns compared.

    Returns
    -------
    numpy.ndarray
        ``(N,)``; NaN where a stamp has no estimate.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = [np.abs(isolated[n] - blended[n]) / np.hypot(isolated[f"{n}_err"], blended[f"{n}_err"]) for n in names]
    return np.max(gaps, axis=0)


def routed_rows(blended: np.ndarray, psf_is_isolated_own: bool, gap: np.ndarray | None = None, sigma: float | None = None) -> np.ndarray:
    """Which stamps go to the ``blended`` route: the flagged ones, those where the routes disagree by more than
    ``sigma`` (:func:`disagreement`), or all when the call's PSF is not the isolated route's.

    Parameters
    ----------
    blended : numpy.ndarray
        ``(N,)`` blend flags of the stamps.
    psf_is_isolated_own : bool
        The call's PSF is the one the ``isolated`` estimator was trained on.
    gap : numpy.ndarray, optional
        ``(N,)`` :func:`disagreement` of the routes (None: not measured).
    sigma : float, optional
        Disagreement above which a stamp goes to the ``blended`` route.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` booleans.
    """
    blended = np.asarray(blended, dtype=bool)
    if not psf_is_isolated_own:
        return np.ones_like(blended)
    if gap is None or sigma is None:
        return blended.copy()
    return blended | (np.nan_to_num(np.asarray(gap, dtype=float), nan=0.0) > sigma)


def merge_routes(count: int, columns: tuple[str, ...], parts: list[tuple[np.ndarray, dict]], fill: dict) -> dict[str, np.ndarray]:
    """One column dict of ``count`` rows from the routes' predictions.

    Parameters
    ----------
    count : int
        Rows in all.
    columns : tuple of str
        The routed estimator's output columns, in order.
    parts : list of (numpy.ndarray, dict)
        Each route's rows (boolean mask of ``count``) and its predictions on them.
    fill : dict
        Values for a column a route does not predict (the call's PSF FWHM and zeropoint).

    Raises
    ------
    ConfigError
        When a route lacks a column that has no fill value.
    """
    merged = {}
    for name in columns:
        dtype = np.int32 if name == "flags" else np.float64
        out = np.full(count, 0 if name == "flags" else np.nan, dtype=dtype)
        for rows, values in parts:
            if not rows.any():
                continue
            if name in values:
                out[rows] = values[name]
            elif name in fill:
                out[rows] = np.broadcast_to(np.asarray(fill[name], dtype=float), (count,))[rows]
            else:
                raise ConfigError(f"a route of this estimator predicts no {name!r} column")
        merged[name] = out
    return merged


def write_routed_estimator(isolated: str | Path, blended: str | Path, out: str | Path, disagreement_sigma: float | None = None) -> Path:
    """Write a routed estimator folder from two estimator folders (copied in, with their ``run.json`` lineage).

    Parameters
    ----------
    isolated : str or Path
        Estimator for unflagged stamps on its own PSF (the F160W production estimator).
    blended : str or Path
        Estimator for flagged stamps and every other PSF: it must take a PSF input and flag blends
        (a production estimator with input checks).
    out : str or Path
        The routed folder, written whole or not at all.
    disagreement_sigma : float, optional
        Also send a stamp to ``blended`` when the routes disagree by more than this many combined 68% half-widths
        (:func:`disagreement`; both run on every stamp). None: the blend flag and the PSF alone route.

    Returns
    -------
    Path
        The manifest.

    Raises
    ------
    ConfigError
        On a missing estimator, different stamp sizes, or a ``blended`` estimator without a PSF input or input checks.
    """
    from legato.io.folders import publish_folder, staging_with
    from legato.models.estimator import MANIFEST, read_manifest

    sources = {"isolated": Path(isolated), "blended": Path(blended)}
    manifests = {name: read_manifest(folder) for name, folder in sources.items()}
    if any(m.get("kind") == ROUTED_KIND for m in manifests.values()):
        raise ConfigError("a route must be a plain estimator, not a routed one")
    sizes = {int(m["stamp_size"]) for m in manifests.values()}
    if len(sizes) != 1:
        raise ConfigError(f"the routes take stamps of different sizes: {sorted(sizes)}")
    general = manifests["blended"]
    if disagreement_sigma is not None and not (disagreement_sigma > 0 and all(m.get("uncertainty") for m in manifests.values())):
        raise ConfigError(f"routing by disagreement needs a positive sigma and both routes with uncertainties (got {disagreement_sigma})")
    if not (general.get("psf_input") or {}).get("bands") or not general.get("input_range"):
        raise ConfigError(f"the blended route ({blended}) must take a PSF input and flag blends (a PSF-conditioned production estimator)")
    out = Path(out)
    staging, copied = staging_with(sources, out)
    lineage = {name: {"folder": str(folder), **copied[name]} for name, folder in sources.items()}
    manifest = {
        "kind": ROUTED_KIND,
        "stamp_size": sizes.pop(),
        "routes": {name: name for name in ROUTES},
        "disagreement_sigma": None if disagreement_sigma is None else float(disagreement_sigma),
        "architecture": "routed",
        "training": {"recipe": {"routes": {name: str(sources[name]) for name in ROUTES}}, "lineage": lineage},
        "psf_input": general["psf_input"],
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    publish_folder(staging, out)
    return out / MANIFEST
