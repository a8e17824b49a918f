"""Labelling a realistic (or real) stamp set by single-Sérsic fits, as van der Wel labelled CANDELS.

The realistic domain has no single-Sérsic truth: its labels are what a
classical pipeline measures. Test A and pool B are fitted with the main
set-up (survey background, neighbours masked by photutils segmentation); test
A is fitted a second time with an alternative set-up (a local sky correction
and an exponential start, see params.yaml ``realistic_labels``), which gives the
"classical versus classical" column of Table 2: how far two reasonable
classical fits of the same galaxies disagree.

Fits whose rows are unusable (bad input, failed fit, a parameter on a limit or
no convergence: van der Wel's flags 1-3) are dropped from the labelled sets;
``label_flags`` keeps the poor-fit bit of the rows kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from legato.classical.fitter import FLAG_AT_LIMIT, FLAG_BAD_INPUT, FLAG_FIT_ERROR, FLAG_NOT_CONVERGED, FitSettings
from legato.classical.run import fit_stamp_set
from legato.columns import LABEL_COLUMNS
from legato.errors import ConfigError
from legato.io.fingerprint import FINGERPRINT_NAME, recipe
from legato.io.stamps import StampSetMeta, read_stamp_set, write_stamp_set

CLASSICAL_AGREEMENT_TARGET = {"re": 0.8}  # two defensible set-ups should agree about as well as two real catalogues (0.86)
UNUSABLE = FLAG_BAD_INPUT | FLAG_FIT_ERROR | FLAG_AT_LIMIT | FLAG_NOT_CONVERGED
ALTERNATIVE_PREFIX = "alt_"


def usable(flags) -> np.ndarray:
    """True for fits good enough to be labels."""
    return (np.asarray(flags, dtype=np.int64) & UNUSABLE) == 0


def labelled_table(generation: Table, fits: Table, alternative: Table | None = None) -> Table:
    """Generation parameters joined with the fitted labels (and the alternative fit), row by row.

    Parameters
    ----------
    generation : astropy.table.Table
        The raw set's label table (``id`` and ``gen_*`` columns).
    fits : astropy.table.Table
        Main classical fits, one row per ``id``.
    alternative : astropy.table.Table, optional
        Fits of the same stamps with the alternative set-up.

    Returns
    -------
    astropy.table.Table
        ``generation`` plus the label columns, ``label_flags`` and ``reduced_chi2``
        (and ``alt_*`` columns), in the order of ``generation``.
    """
    ids = np.asarray(generation["id"])
    table = generation.copy(copy_data=True)
    columns = (*LABEL_COLUMNS, "flags", "reduced_chi2")
    main = rows_by_id(fits, ids, columns)
    for name in LABEL_COLUMNS:
        table[name] = main[name]
        table[name].unit = fits[name].unit
    table["label_flags"] = main["flags"].astype(np.int64)
    table["reduced_chi2"] = main["reduced_chi2"]
    if alternative is not None:
        other = rows_by_id(alternative, ids, columns)
        for name in LABEL_COLUMNS:
            table[ALTERNATIVE_PREFIX + name] = other[name]
        table[ALTERNATIVE_PREFIX + "flags"] = other["flags"].astype(np.int64)
    return table


def classical_versus_classical(test_labels) -> dict:
    """R² of the alternative classical fit against the main one on the test galaxies both set-ups fitted.

    Returns
    -------
    dict
        ``r2`` per parameter, ``n`` galaxies, and ``targets``: each parameter of
        :data:`CLASSICAL_AGREEMENT_TARGET` with its value, target and whether it is met.

    Raises
    ------
    ConfigError
        If the table has no alternative fit (``alt_*`` columns).
    """
    from legato.stats import r2_table

    if f"{ALTERNATIVE_PREFIX}flags" not in test_labels.colnames:
        raise ConfigError("test A has no alternative classical fit (alt_* columns): run legato label-realistic")
    both = usable(test_labels[f"{ALTERNATIVE_PREFIX}flags"])
    truth = test_labels[both]
    other = {
        name: np.asarray(truth[ALTERNATIVE_PREFIX + name], dtype=float)
        for name in LABEL_COLUMNS
        if ALTERNATIVE_PREFIX + name in truth.colnames
    }
    r2 = {p: (round(float(v), 4) if np.isfinite(v) else None) for p, v in r2_table(truth, other).items()}
    targets = {
        p: {"value": r2.get(p), "target": t, "met": r2.get(p) is not None and r2[p] >= t} for p, t in CLASSICAL_AGREEMENT_TARGET.items()
    }
    return {"r2": r2, "n": int(both.sum()), "targets": targets}


def rows_by_id(catalogue: Table, ids, columns) -> dict[str, np.ndarray]:
    """Columns of a fit catalogue in the order of ``ids``; ids without a fit get NaN and the fit-error flag."""
    order = {int(i): k for k, i in enumerate(catalogue["id"])}
    rows = np.array([order.get(int(i), -1) for i in ids])
    found = rows >= 0
    out = {}
    for name in columns:
        values = np.asarray(catalogue[name], dtype=float)[np.clip(rows, 0, None)]
        missing = FLAG_FIT_ERROR if name == "flags" else np.nan
        out[name] = np.where(found, values, missing)
    return out


def fit_label_catalogues(
    raw_dir: str | Path,
    labels_dir: str | Path,
    psf_path: str | Path,
    settings: FitSettings,
    alternative: FitSettings,
    splits: tuple = ("A", "B"),
    alternative_splits: tuple = ("A",),
    workers: int | None = None,
    block_size: int = 50,
    max_stamps: int | None = None,
    progress: bool = True,
) -> dict:
    """Fit the raw realistic splits: the label catalogues ``labels_dir/<split>.fits`` (and ``<split>_alternative.fits``).

    This is the expensive, published half of the labelling (each fit resumes
    from its finished parts); :func:`write_labelled_sets` turns the catalogues
    into labelled stamp sets in seconds.

    Returns
    -------
    dict
        Per split, the summary of each fit (rates, flags).
    """
    raw_dir, labels_dir = Path(raw_dir), Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for split in splits:
        runs = {
            "main": fit_stamp_set(
                raw_dir / split, labels_dir / f"{split}.fits", psf_path, settings, workers, block_size, max_stamps, progress
            )
        }
        if split in alternative_splits:
            other_path = labels_dir / f"{split}_alternative.fits"
            runs["alternative"] = fit_stamp_set(
                raw_dir / split, other_path, psf_path, alternative, workers, block_size, max_stamps, progress
            )
        report[split] = {"fits": runs}
    return report


# the project's sources that assemble the labelled realistic sets (the code part of their fingerprints)
LABELLED_CODE = ("classical/labels.py", "io/stamps.py", "io/fingerprint.py")


def labelled_recipes(raw_dir: str | Path, labels_dir: str | Path, splits: tuple = ("A", "B")) -> dict[str, dict]:
    """The recipe of every labelled realistic set: its raw split's fingerprint and its label catalogues.

    The raw stamps enter through their fingerprint, not their bytes, so a raw set
    regenerated on another CPU leaves the labelled sets' dependants up to date.
    """
    raw_dir, labels_dir = Path(raw_dir), Path(labels_dir)
    recipes = {}
    for split in splits:
        catalogues = [path for path in (labels_dir / f"{split}.fits", labels_dir / f"{split}_alternative.fits") if path.is_file()]
        inputs = (raw_dir / split / FINGERPRINT_NAME, *catalogues)
        recipes[split] = recipe("realistic_labelled", split, {"splits": list(splits)}, inputs, libraries=("numpy", "astropy"))
    return recipes


def write_labelled_sets(
    raw_dir: str | Path, labels_dir: str | Path, out_dir: str | Path, splits: tuple = ("A", "B"), progress: bool = False
) -> dict:
    """Labelled stamp sets ``out_dir/<split>``: the raw stamps whose fits are usable, with their labels.

    Parameters
    ----------
    raw_dir : str or Path
        Raw realistic sets (one sub-folder per split).
    labels_dir : str or Path
        Fit catalogues written by :func:`fit_label_catalogues`.
    out_dir : str or Path
        Where the labelled sets go.
    splits : tuple of str
        Splits to assemble; a split with an ``<split>_alternative.fits``
        catalogue also gets the ``alt_*`` columns.
    progress : bool
        Show a progress bar over the splits.

    Returns
    -------
    dict
        Per split: stamps fitted, kept as labelled, and dropped per reason; for a split
        with an alternative fit, its ``classical_vs_classical`` agreement and target.
    """
    from tqdm import tqdm

    raw_dir, labels_dir, out_dir = Path(raw_dir), Path(labels_dir), Path(out_dir)
    report = {}
    for split in tqdm(splits, desc="assemble realistic", unit="set", disable=not progress):
        main_path = labels_dir / f"{split}.fits"
        if not main_path.is_file():
            raise ConfigError(f"no label catalogue {main_path}: run legato label-realistic first")
        other_path = labels_dir / f"{split}_alternative.fits"
        other = Table.read(other_path) if other_path.is_file() else None
        stamps, generation, header = read_stamp_set(raw_dir / split)
        fits = Table.read(main_path)
        fitted = np.isin(np.asarray(generation["id"]), np.asarray(fits["id"]))
        stamps, generation = stamps[fitted], generation[fitted]
        table = labelled_table(generation, fits, other)
        keep = usable(table["label_flags"])
        meta = StampSetMeta(
            pixel_scale=float(header["PIXSCALE"]),
            zeropoint=float(header["MAGZPT"]),
            band=str(header["FILTER"]),
            psf_id=str(header["PSFID"]),
            domain=str(header.get("DOMAIN", "realistic")),
            extra={
                "SPLIT": split,
                "LABELS": ("classical-imfit", "labels are single-Sersic fits"),
                "SKYSIG": header.get("SKYSIG"),
                "EXPTIME": header.get("EXPTIME"),
            },
        )
        write_stamp_set(out_dir / split, stamps[keep], table[keep], meta)
        flags = np.asarray(table["label_flags"])
        report[split] = {
            "fitted": int(len(table)),
            "labelled": int(keep.sum()),
            "dropped": {
                name: int(np.sum((flags & bit) > 0))
                for bit, name in (
                    (FLAG_BAD_INPUT, "bad_input"),
                    (FLAG_FIT_ERROR, "fit_error"),
                    (FLAG_AT_LIMIT, "at_limit"),
                    (FLAG_NOT_CONVERGED, "not_converged"),
                )
            },
        }
        if other is not None:  # Table 2's third column and its target, on the galaxies both set-ups labelled
            report[split]["classical_vs_classical"] = classical_versus_classical(table[keep])
    return report
