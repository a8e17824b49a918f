"""Fingerprints of regenerated stamp sets: what downstream stages depend on instead of the bytes.

A stamp set that ``dvc repro`` regenerates on every machine (the simulated,
noiseless and realistic sets) comes out with different last bits on CPUs of
different families: NumPy dispatches float64 ``exp``/``log``/``power`` to
AVX-512 code (Intel SVML) on machines that have it and to other code on
AVX2-only machines, and the rendered pixels inherit the few-ULP differences
(docs/reproducibility.md). Keying the expensive stages on those bytes made a
fresh clone on another CPU retrain and refit everything.

So every split of a regenerated set gets a fingerprint file
(``<split>/fingerprint.json``, the set's DVC output) that holds

- its **recipe**: the configuration it was made with (parameters, seeds,
  sizes), the md5 of its input files and the versions of the libraries that
  compute it; and
- its **statistics**: pixel and label moments, each with the scale its
  tolerance is relative to.

Downstream stages depend on the fingerprint, not on the stamps. When a set is
regenerated, its new fingerprint is settled against the one recorded in the
stage's committed report (:func:`settle`):

1. no recorded fingerprint, or another recipe: the new one is written (a
   semantic change: parameters, seeds, inputs or a new lock; what depends on
   the set reruns);
2. the same recipe and every statistic within :data:`RTOL` of its scale: the
   **recorded** fingerprint is written again, byte for byte (rounding-level
   differences: nothing downstream reruns);
3. the same recipe and code, a statistic beyond the tolerance: an error that
   names the set and the statistic (the set is not the one the published
   results were computed from);
4. the same recipe, other code (the digest of the set's source files), a
   statistic beyond the tolerance: the new fingerprint is written (a semantic
   code change; what depends on the set reruns).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from legato.errors import DataError

FINGERPRINT_NAME = "fingerprint.json"
FORMAT = 1
RTOL = 1e-6  # relative to each statistic's scale: ~1e9 times a float64 rounding, ~10 float32 ULPs of every pixel at once
LIBRARIES = ("numpy", "scipy", "galsim", "astropy", "photutils")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/legato
STAND_IN_VARIABLE = "LEGATO_TEST_ULP_SHIFT"


class FingerprintMismatch(DataError):
    """A regenerated set differs from its recorded fingerprint beyond rounding, with the same recipe and code."""


# --- recipe ----------------------------------------------------------------------------------


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    digest = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def code_digest(sources: tuple[str, ...]) -> str:
    """md5 of the project's source files that compute a set.

    Parameters
    ----------
    sources : tuple of str
        Paths relative to the ``legato`` package (files, or folders whose ``*.py`` files count).

    Returns
    -------
    str
        Hex digest over the relative names and contents, in sorted order.
    """
    digest = hashlib.md5()
    for source in sorted(sources):
        path = PACKAGE_ROOT / source
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(PACKAGE_ROOT).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Versions of the libraries that compute a set, and the Python minor version."""
    versions = {"python": ".".join(platform.python_version_tuple()[:2])}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def recipe(name: str, split: str, config: dict, inputs: tuple[str | Path, ...], libraries: tuple[str, ...] = LIBRARIES) -> dict:
    """The deterministic description of one split of a regenerated set.

    Parameters
    ----------
    name : str
        The set (``simulated``, ``noiseless``, ``realistic_raw``, ...).
    split : str
        The split.
    config : dict
        JSON-serialisable configuration it is made with (parameters, seeds, sizes).
    inputs : tuple of path
        Input files or folders (their md5 is part of the recipe).
    libraries : tuple of str
        Distributions whose versions are part of the recipe.

    Returns
    -------
    dict
        ``set``, ``split``, ``config``, ``inputs`` (path -> md5), ``libraries`` (name -> version).
    """
    missing = [str(path) for path in inputs if not Path(path).exists()]
    if missing:
        raise DataError(f"cannot fingerprint set {name!r} split {split!r}: input(s) {', '.join(missing)} missing")
    return {
        "set": name,
        "split": split,
        "config": json.loads(json.dumps(config, sort_keys=True, default=str)),
        "inputs": {str(path): file_md5(path) for path in inputs},
        "libraries": library_versions(libraries),
    }


# --- statistics ------------------------------------------------------------------------------


def _significant(value: float) -> float:
    return float(f"{value:.12g}")


def split_statistics(split_dir: str | Path) -> dict[str, dict]:
    """Pixel and label moments of one stamp-set folder, each with its tolerance scale.

    Sums run in float64 over the chunks in order, so a machine computes the same
    value every time; across CPUs they agree to rounding.

    Parameters
    ----------
    split_dir : str or Path
        A stamp-set folder (chunk files).

    Returns
    -------
    dict
        Statistic name -> ``{"value": float, "scale": float}``.
    """
    from legato.io.stamps import iter_stamp_set, read_stamp_masks

    count, total, total_abs, total_sq, weighted_x, weighted_y = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    low, high, side = math.inf, -math.inf, 0
    columns: dict[str, list[float]] = {}
    for stamps, labels, _ in iter_stamp_set(split_dir):
        pixels = np.asarray(stamps, dtype=np.float64)
        side = pixels.shape[-1]
        absolute = np.abs(pixels)
        count += len(pixels)
        total += float(pixels.sum())
        total_abs += float(absolute.sum())
        total_sq += float(np.square(pixels).sum())
        weighted_x += float((absolute.sum(axis=(0, 1)) * np.arange(pixels.shape[2])).sum())
        weighted_y += float((absolute.sum(axis=(0, 2)) * np.arange(pixels.shape[1])).sum())
        if pixels.size:
            low, high = min(low, float(pixels.min())), max(high, float(pixels.max()))
        for column in labels.colnames:
            values = np.asarray(labels[column])
            if values.ndim != 1 or values.dtype.kind not in "biuf":
                continue
            values = values.astype(np.float64)
            finite = np.isfinite(values)
            sums = columns.setdefault(column, [0.0, 0.0, 0.0, 0.0])
            sums[0] += float(finite.sum())
            sums[1] += float(len(values) - finite.sum())
            sums[2] += float(values[finite].sum())
            sums[3] += float(np.square(values[finite]).sum())
    statistics = {
        "stamps": {"value": count, "scale": 0.0},  # a count must match exactly
        "pixels.sum": {"value": total, "scale": total_abs},
        "pixels.sum_abs": {"value": total_abs, "scale": total_abs},
        "pixels.sum_sq": {"value": total_sq, "scale": total_sq},
        "pixels.min": {"value": low if count else 0.0, "scale": max(abs(low), abs(high)) if count else 0.0},
        "pixels.max": {"value": high if count else 0.0, "scale": max(abs(low), abs(high)) if count else 0.0},
        "pixels.centroid_x": {"value": weighted_x / total_abs if total_abs else 0.0, "scale": float(side)},
        "pixels.centroid_y": {"value": weighted_y / total_abs if total_abs else 0.0, "scale": float(side)},
    }
    masks = read_stamp_masks(split_dir) if count else None
    if masks is not None:
        statistics["masks.pixels"] = {"value": int(masks.sum()), "scale": float(masks.size)}
    for column, (finite, missing, first, second) in columns.items():
        mean = first / finite if finite else 0.0
        rms = math.sqrt(second / finite) if finite else 0.0
        statistics[f"labels.{column}.mean"] = {"value": mean, "scale": rms}
        statistics[f"labels.{column}.rms"] = {"value": rms, "scale": rms}
        statistics[f"labels.{column}.missing"] = {"value": int(missing), "scale": 0.0}
    return {
        key: {
            "value": _significant(stat["value"]) if isinstance(stat["value"], float) else stat["value"],
            "scale": _significant(stat["scale"]),
        }
        for key, stat in sorted(statistics.items())
    }


def deviations(new: dict, recorded: dict) -> dict[str, float]:
    """Each shared statistic's difference in units of its tolerance (``RTOL * scale``; inf when beyond an exact one)."""
    out = {}
    for key in sorted(set(new) & set(recorded)):
        difference = abs(float(new[key]["value"]) - float(recorded[key]["value"]))
        tolerance = RTOL * max(float(new[key]["scale"]), float(recorded[key]["scale"]))
        out[key] = difference / tolerance if tolerance > 0 else (0.0 if difference == 0 else math.inf)
    return out


# --- settling a regenerated split against its record -----------------------------------------


def fingerprint(recipe_: dict, statistics: dict) -> dict:
    """The fingerprint file's content (what downstream stages depend on)."""
    return {"format": FORMAT, "recipe": recipe_, "statistics": statistics}


def settle(split_dir: str | Path, recipe_: dict, code: str, recorded: dict | None) -> tuple[dict, dict]:
    """Fingerprint a regenerated split, keep its recorded fingerprint when the data agree, write it.

    Parameters
    ----------
    split_dir : str or Path
        The regenerated split's folder; ``fingerprint.json`` is written in it.
    recipe_ : dict
        The split's recipe (:func:`recipe`).
    code : str
        Digest of the source files that computed it (:func:`code_digest`).
    recorded : dict or None
        The fingerprint recorded for this split in the stage's committed report
        (with its ``code``), or None.

    Returns
    -------
    tuple of dict
        The record to keep in the report (fingerprint plus ``code``), and the
        outcome for the timing file: ``outcome`` (``new``, ``kept``, ``changed``)
        and ``largest_deviation`` (in tolerance units) when compared.

    Raises
    ------
    FingerprintMismatch
        Same recipe, same code, a statistic beyond its tolerance (named).
    """
    split_dir = Path(split_dir)
    statistics = split_statistics(split_dir)
    new = fingerprint(recipe_, statistics) | {"code": code}
    outcome: dict = {"outcome": "new"}
    record = new
    if recorded is not None and recorded.get("format") == FORMAT and recorded.get("recipe") == recipe_:
        moved = deviations(statistics, recorded["statistics"])
        largest = max(moved.values(), default=0.0)
        outcome = {"largest_deviation": _significant(largest) if math.isfinite(largest) else "inf"}
        if largest <= 1.0 and set(statistics) == set(recorded["statistics"]):
            record = recorded | {"code": code}
            outcome["outcome"] = "kept"
        elif recorded.get("code") == code and largest > 1.0:
            worst = max(moved, key=moved.get)
            raise FingerprintMismatch(
                f"regenerated set {split_dir} differs from its recorded fingerprint beyond rounding: statistic "
                f"{worst} is {statistics[worst]['value']!r}, recorded {recorded['statistics'][worst]['value']!r} "
                f"(tolerance {RTOL:g} x {recorded['statistics'][worst]['scale']!r}), with the same recipe and code; "
                "the published results downstream were not computed from these stamps"
            )
        else:
            outcome["outcome"] = "changed"
    payload = {key: value for key, value in record.items() if key != "code"}
    target = split_dir / FINGERPRINT_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    return record, outcome


def recorded_fingerprints(report: str | Path | None) -> dict:
    """The fingerprints recorded in a stage report (empty when it has none)."""
    if report is None or not Path(report).is_file():
        return {}
    try:
        return dict(json.loads(Path(report).read_text()).get("fingerprints") or {})
    except (ValueError, AttributeError):
        return {}


def settle_set(out_dir: str | Path, recipes: dict[str, dict], code: str, report: str | Path | None) -> tuple[dict, dict]:
    """:func:`settle` every split of a regenerated set against the fingerprints in its report.

    Returns
    -------
    tuple of dict
        Split -> record (for the report's ``fingerprints``), split -> outcome (for the timing file).
    """
    recorded = recorded_fingerprints(report)
    records, outcomes = {}, {}
    for split, split_recipe in recipes.items():
        records[split], outcomes[split] = settle(Path(out_dir) / split, split_recipe, code, recorded.get(split))
    return records, outcomes


# --- a stand-in for another CPU (tests) ------------------------------------------------------


def cpu_stand_in(stamps: np.ndarray) -> np.ndarray:
    """Stamps moved by ``$LEGATO_TEST_ULP_SHIFT`` float32 units in the last place (unchanged when unset).

    A test-only switch: one machine cannot run another CPU's vector code, so
    the pipeline tests shift every pixel by a few ULPs (what an AVX2 machine
    does to an AVX-512 machine's stamps) or by many (a set that really differs).
    """
    shift = int(os.environ.get(STAND_IN_VARIABLE, "0") or 0)
    if shift == 0:
        return stamps
    moved = np.ascontiguousarray(stamps, dtype=np.float32).copy()
    bits = moved.view(np.int32)
    bits += np.int32(shift)
    return moved
