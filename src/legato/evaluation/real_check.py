"""The real check: estimators against GALFIT on real galaxies, galaxy by galaxy (few galaxies: reported, never tuned on).

One convention for every real-data figure: errors are GALFIT - estimate (the
paper's input - output, :func:`legato.stats.errors`), relative for re and n.
``legato real-check`` writes it to ``reports/real_check.json`` and
``legato evaluate-production`` puts the production estimator's into
``reports/production.json`` (``real``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legato.columns import COLUMN, PARAMETERS, SERSIC_COLUMNS
from legato.flags import BLENDED
from legato.ingest.real_sets import INGEST_FLAG_NAMES
from legato.io.galfit import GALFIT_AT_LIMIT
from legato.io.stamps import load_split
from legato.models.estimator import LoadedEstimator
from legato.models.uncertainty import covered
from legato.stats import errors, r2_table

REAL_CHECK_MAG_LIMIT = 24.5  # H magnitude of the real-check target
CUT_TARGET_LIMIT = 0.05  # a target with more than this fraction of no-data pixels within two effective radii is "cut"


def real_check(estimators: dict, real_dir: str | Path) -> dict:
    """Score estimators on a real labelled stamp set, galaxy by galaxy (few galaxies: report, do not tune).

    The check's sample is the galaxies brighter than H = 24.5 whose GALFIT fit
    has no parameter at a limit (GALFIT's ``ERROR = Convergence``, set on 11 of
    the 15 UDS blocks, is reported per galaxy); galaxies whose target is cut by a
    no-data band (``padded_near_target`` above 5%) are reported and also left out
    of a second summary.

    Parameters
    ----------
    estimators : dict
        Name -> estimator folder (or a loaded estimator: anything with ``predict``).
    real_dir : str or Path
        Ingested real stamps with GALFIT labels (``legato ingest galfit``).

    The stamps' band and zeropoint come from the set's header (``FILTER``, ``MAGZPT``): a
    PSF-conditioned estimator predicts them with that band's PSF; an estimator without a PSF
    input scores F160W sets only (it is listed under ``skipped`` for another band).

    Returns
    -------
    dict
        ``galaxies`` (one row per galaxy: GALFIT labels and flags, the neighbours photutils finds
        at ingest, each estimator's values, 68% intervals, flags and errors); per estimator: R²,
        median error per parameter on every galaxy, on the check sample and on its uncut part, and
        whether |median Δmag| <= 0.15 there; ``targets``: each later estimator no worse than the
        first (:func:`no_worse_than_first`).
    """
    stamps, labels, header = load_split(real_dir)
    band, zeropoint = str(header.get("FILTER", "F160W")), header.get("MAGZPT")
    flags = np.asarray(labels["flags"], dtype=np.int64) if "flags" in labels.colnames else np.zeros(len(labels), dtype=np.int64)
    mag = np.asarray(labels["mag"], dtype=float)
    sample = (mag < REAL_CHECK_MAG_LIMIT) & ((flags & GALFIT_AT_LIMIT) == 0)
    cut = (
        np.asarray(labels["padded_near_target"], dtype=float) > CUT_TARGET_LIMIT
        if "padded_near_target" in labels.colnames
        else np.zeros(len(labels), bool)
    )
    galaxies = []
    for k in range(len(labels)):
        row = {
            "id": int(labels["id"][k]) if "id" in labels.colnames else k,
            "source_file": str(labels["source_file"][k]) if "source_file" in labels.colnames else "",
            "galfit": {c: round(float(labels[c][k]), 4) for c in ("mag", "re_arcsec", "n", "q", "ellipticity")},
            "galfit_flags": [name for bit, name in INGEST_FLAG_NAMES.items() if flags[k] & bit],
            "in_check_sample": bool(sample[k]),
            "target_cut": bool(cut[k]),
        }
        for c in ("padded_near_target", "noise_sigma", "n_neighbours", "neighbour_fraction"):
            if c in labels.colnames:
                row[c] = round(float(labels[c][k]), 5)
        galaxies.append(row)
    report = {
        "n": len(stamps),
        "source": str(real_dir),
        "band": band,
        "n_check_sample": int(sample.sum()),
        "n_check_sample_uncut": int((sample & ~cut).sum()),
        "sample": f"H < {REAL_CHECK_MAG_LIMIT}, no GALFIT parameter at a limit",
        "error": "GALFIT - estimate (relative for re and n)",
        "estimators": {},
        "skipped": {},
    }
    for name, estimator in estimators.items():
        loaded = estimator if hasattr(estimator, "predict") else LoadedEstimator(estimator)
        psf = None
        if band != "F160W" or getattr(loaded, "psf_bands", None) is not None:
            if getattr(loaded, "psf_bands", None) is None:
                report["skipped"][name] = f"takes no PSF input: F160W stamps only, not {band}"
                continue
            psf = loaded.psf_condition(band=band, zeropoint=None if zeropoint is None else float(zeropoint))
        values = loaded.predict(stamps) if psf is None else loaded.predict(stamps, psf=psf)
        error = {p: np.asarray(errors(p, labels[COLUMN[p]], values[COLUMN[p]]), dtype=float) for p in PARAMETERS}

        def medians(rows, error=error):
            return _rounded({p: float(np.nanmedian(error[p][rows])) if rows.any() else np.nan for p in PARAMETERS})

        summary = {
            "r2": _rounded(r2_table(labels, values)),
            "median_error": medians(np.ones(len(labels), bool)),
            "median_error_check_sample": medians(sample),
            "median_error_check_sample_uncut": medians(sample & ~cut),
        }
        if "mag_err" in values:  # the 68% intervals of an estimator with uncertainties
            inside = covered(mag[sample], np.asarray(values["mag"])[sample], np.asarray(values["mag_err"])[sample])
            summary["mag_within_err68_check_sample"] = round(float(np.mean(inside)), 3) if inside.size else None
        summary["target_abs_median_dmag_le_0.15"] = {
            "check_sample": summary["median_error_check_sample"]["mag"] is not None
            and abs(summary["median_error_check_sample"]["mag"]) <= 0.15,
            "check_sample_uncut": summary["median_error_check_sample_uncut"]["mag"] is not None
            and abs(summary["median_error_check_sample_uncut"]["mag"]) <= 0.15,
        }
        report["estimators"][name] = summary
        for k, row in enumerate(galaxies):
            row[name] = {
                **{c: round(float(values[c][k]), 4) for c in ("mag", "re_arcsec", "n", "ellipticity")},
                **({"flags": int(values["flags"][k])} if "flags" in values else {}),
                **({"blended": bool(int(values["flags"][k]) & BLENDED)} if "neighbour_fraction" in values else {}),
                **{c: round(float(values[c][k]), 4) for c in ("neighbour_fraction",) if c in values},
                **{f"{c}_err": round(float(values[f"{c}_err"][k]), 4) for c in SERSIC_COLUMNS if f"{c}_err" in values},
                **({"sky_sigma": round(float(values["sky_sigma"][k]), 6)} if "sky_sigma" in values else {}),
                "error": {p: round(float(error[p][k]), 4) for p in PARAMETERS},
            }
    report["targets"] = no_worse_than_first(report["estimators"])
    report["galaxies"] = galaxies
    return report


def no_worse_than_first(scores: dict) -> dict:
    """Each later estimator's |median Δmag| against the first one's (e.g. adapted against its base), per sample."""
    names = list(scores)
    out = {}
    for name in names[1:]:
        out[f"{name}_no_worse_than_{names[0]}"] = {}
        for sample in ("check_sample", "check_sample_uncut"):
            first, this = (scores[n][f"median_error_{sample}"]["mag"] for n in (names[0], name))
            met = first is not None and this is not None and abs(this) <= abs(first)
            out[f"{name}_no_worse_than_{names[0]}"][sample] = {
                "abs_median_dmag": None if this is None else abs(this),
                f"{names[0]}": None if first is None else abs(first),
                "met": met,
            }
    return out


def _rounded(values: dict) -> dict:
    return {k: (round(float(v), 4) if v is not None and np.isfinite(v) else None) for k, v in values.items()}


def band_pairs(reference: dict, other: dict) -> dict:
    """Per galaxy, the other band's size ratio and colour against the reference band's, for GALFIT and each estimator.

    Galaxies are matched by block number (``H.gf7.fits`` with ``J.gf7.fits``). For each
    estimator scored in both bands: per galaxy ``re_other / re_reference`` and
    ``mag_other - mag_reference``, the same from GALFIT, and, on the galaxies in both
    check samples, the median of (the estimator's ratio / GALFIT's) and of (the estimator's
    colour - GALFIT's). The target: that median ratio within 5% of 1.

    Parameters
    ----------
    reference, other : dict
        :func:`real_check` reports of the same galaxies in two bands (e.g. F160W and F125W).
    """

    def block(row):
        name = Path(row["source_file"]).name
        return name.split(".", 1)[1] if "." in name else name

    others = {block(row): row for row in other["galaxies"]}
    names = [n for n in other["estimators"] if n in reference["estimators"]]
    galaxies, ratios = [], {n: [] for n in names}
    colours = {n: [] for n in names}
    for row in reference["galaxies"]:
        match = others.get(block(row))
        if match is None:
            continue
        entry = {
            "block": block(row),
            "in_both_check_samples": bool(row["in_check_sample"] and match["in_check_sample"]),
            "galfit": _pair(row["galfit"], match["galfit"]),
        }
        for name in names:
            entry[name] = _pair(row[name], match[name])
            if entry["in_both_check_samples"] and np.isfinite(entry[name]["re_ratio"]) and np.isfinite(entry["galfit"]["re_ratio"]):
                ratios[name].append(entry[name]["re_ratio"] / entry["galfit"]["re_ratio"])
                colours[name].append(entry[name]["colour"] - entry["galfit"]["colour"])
        galaxies.append(entry)
    summary = {}
    for name in names:
        median_ratio = float(np.median(ratios[name])) if ratios[name] else None
        summary[name] = {
            "n": len(ratios[name]),
            "median_ratio_of_size_ratios": None if median_ratio is None else round(median_ratio, 4),
            "median_colour_difference": round(float(np.median(colours[name])), 4) if colours[name] else None,
            "target_size_ratio_within_5pct": median_ratio is not None and abs(median_ratio - 1) <= 0.05,
        }
    return {
        "bands": f"{other['band']} / {reference['band']}",
        "size_ratio": f"re_{other['band']} / re_{reference['band']} (estimator's over GALFIT's)",
        "colour": f"mag_{other['band']} - mag_{reference['band']} (estimator's minus GALFIT's)",
        "estimators": summary,
        "galaxies": galaxies,
    }


def _pair(reference: dict, other: dict) -> dict:
    ratio = other["re_arcsec"] / reference["re_arcsec"] if reference["re_arcsec"] > 0 else float("nan")
    return {"re_ratio": round(float(ratio), 4), "colour": round(float(other["mag"] - reference["mag"]), 4)}
