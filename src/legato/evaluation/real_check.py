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

from legato.columns import COLUMN, PARAMETERS
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

    Returns
    -------
    dict
        ``galaxies`` (one row per galaxy: GALFIT labels and flags, each estimator's values,
        flags and errors); per estimator: R², median error per parameter on every galaxy,
        on the check sample and on its uncut part, and whether |median Δmag| <= 0.15 there;
        ``targets``: each later estimator no worse than the first (:func:`no_worse_than_first`).
    """
    stamps, labels, _ = load_split(real_dir)
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
        for c in ("padded_near_target", "noise_sigma"):
            if c in labels.colnames:
                row[c] = round(float(labels[c][k]), 5)
        galaxies.append(row)
    report = {
        "n": len(stamps),
        "source": str(real_dir),
        "n_check_sample": int(sample.sum()),
        "n_check_sample_uncut": int((sample & ~cut).sum()),
        "sample": f"H < {REAL_CHECK_MAG_LIMIT}, no GALFIT parameter at a limit",
        "error": "GALFIT - estimate (relative for re and n)",
        "estimators": {},
    }
    for name, estimator in estimators.items():
        values = (estimator if hasattr(estimator, "predict") else LoadedEstimator(estimator)).predict(stamps)
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
