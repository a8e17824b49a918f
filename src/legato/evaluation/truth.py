"""Realistic test A scored against the classical labels and, where the domain knows it, the simulated truth.

Table 2 scores a network against single-Sérsic labels fitted by the classical
fitter; on crowded or faint stamps those labels fail too, and a network can be
closer to the galaxy than to its label. The realistic domain knows the truth
of its Sérsic galaxies (``kind == "sersic"``: ``gen_*`` are the drawn
single-Sérsic parameters) and the true total magnitude of every galaxy
(``gen_total_mag``; the composite kinds, bulge+disc, clumpy and real COSMOS
galaxies, have no single-Sérsic truth for radius, index or shape). This module
scores every estimator, and the classical labels themselves, against both,
split into isolated stamps and stamps with neighbours, with the coverage of
the estimators' 68% and 95% intervals.
"""

from __future__ import annotations

import numpy as np

from legato.columns import COLUMN, ERROR_SUFFIXES, PARAMETERS
from legato.flags import BLENDED
from legato.models.uncertainty import covered
from legato.stats import r2_score

TRUTH_COLUMNS = {"mag": "gen_mag", "re": "gen_re_arcsec", "n": "gen_n", "ellipticity": "gen_ellipticity"}
PAPER_SUBSET_MAG = 23.0


def subsets(labels) -> dict[str, np.ndarray]:
    """Row masks: ``all``, ``isolated`` (no neighbour in the stamp) and ``with_neighbours``."""
    neighbours = np.asarray(labels["n_neighbours"]) > 0
    return {"all": np.ones(len(labels), dtype=bool), "isolated": ~neighbours, "with_neighbours": neighbours}


def _scores(reference: dict, estimates, rows: np.ndarray, parameters=PARAMETERS) -> dict:
    """R² and (when the estimates carry intervals) 68% / 95% coverage of ``estimates`` against ``reference`` on ``rows``."""
    out: dict = {"count": int(rows.sum()), "r2": {}}
    coverage: dict = {"68": {}, "95": {}}
    for p in parameters:
        truth, estimate = np.asarray(reference[p], float)[rows], np.asarray(estimates[COLUMN[p]], float)[rows]
        out["r2"][p] = round(float(r2_score(truth, estimate)), 4) if rows.sum() > 1 else None
        for level, suffix in ERROR_SUFFIXES.items():
            width = f"{COLUMN[p]}{suffix}"
            if width in estimates:
                coverage[level][p] = (
                    round(float(np.mean(covered(truth, estimate, np.asarray(estimates[width], float)[rows]))), 3) if rows.any() else None
                )
    if coverage["68"]:
        out["coverage"] = coverage
    return out


def score_test_a(labels, estimates: dict) -> dict:
    """Every estimator (and the classical labels) against the labels and against the truth, per subset.

    Parameters
    ----------
    labels : astropy.table.Table
        The labelled realistic test A (``legato assemble-realistic``): classical labels
        (``mag, re_arcsec, n, ellipticity``), ``gen_*`` truth, ``gen_total_mag``, ``kind``, ``n_neighbours``.
    estimates : dict
        Estimator name -> dict of columns (``mag, re_arcsec, n, ellipticity`` and, for calibrated
        estimators, ``<column>_err`` / ``<column>_err95`` half-widths), one row per label row.

    Returns
    -------
    dict
        ``against_labels`` (estimator -> subset -> scores), ``against_truth`` (Sérsic galaxies:
        ``classical_labels`` and every estimator -> subset, all magnitudes and H < 23), and
        ``total_magnitude`` (every kind: R² of mag against the true total magnitude), with counts; for
        an estimator that flags blends, ``against_labels`` also splits by its own ``BLENDED`` flag
        (``flagged_blended`` / ``flagged_isolated``) and ``blend_flag`` scores the flag against the
        simulation's record of neighbours.
    """
    masks = subsets(labels)
    label_values = {p: labels[COLUMN[p]] for p in PARAMETERS}
    truth = {p: labels[TRUTH_COLUMNS[p]] for p in PARAMETERS}
    sersic = np.asarray(labels["kind"]) == "sersic"
    bright = np.asarray(labels["gen_mag"], float) < PAPER_SUBSET_MAG
    classical = {COLUMN[p]: labels[COLUMN[p]] for p in PARAMETERS}
    report: dict = {
        "counts": {name: int(mask.sum()) for name, mask in masks.items()},
        "against_labels": {},
        "against_truth": {},
        "total_magnitude": {},
    }
    for name, columns in estimates.items():
        report["against_labels"][name] = {subset: _scores(label_values, columns, mask) for subset, mask in masks.items()}
        if "neighbour_fraction" in columns:  # the estimator's own BLENDED flag: what a user sees, not the simulation's record
            flagged = (np.asarray(columns["flags"]) & BLENDED) > 0
            for subset, mask in (("flagged_blended", flagged), ("flagged_isolated", ~flagged)):
                report["against_labels"][name][subset] = _scores(label_values, columns, mask)
            neighbours = masks["with_neighbours"]
            report.setdefault("blend_flag", {})[name] = {
                "flagged": int(flagged.sum()),
                "recall_of_stamps_with_neighbours": round(float(np.mean(flagged[neighbours])), 3) if neighbours.any() else None,
                "precision": round(float(np.mean(neighbours[flagged])), 3) if flagged.any() else None,
            }
    for name, columns in {"classical_labels": classical, **estimates}.items():
        report["against_truth"][name] = {
            f"sersic_{subset}{suffix}": _scores(truth, columns, mask & sersic & extra)
            for subset, mask in masks.items()
            if subset != "all"
            for suffix, extra in (("", np.ones_like(bright)), ("_h23", bright))
        }
        total = {"mag": labels["gen_total_mag"]}
        report["total_magnitude"][name] = {subset: _scores(total, columns, mask, parameters=("mag",)) for subset, mask in masks.items()}
    return report
