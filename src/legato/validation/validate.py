"""`legato validate`: stamp integrity, labels and domain shift of a stamp set, through real GX checkpoints."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np

from legato.conventions import ZEROPOINT_AB
from legato.errors import DataError
from legato.validation.gx import SuiteOutcome, Validator, load_suite
from legato.validation.shift import SHIFT_STATISTICS, build_shift_suite, shift_table
from legato.validation.summary import stamp_summary

LABEL_UNITS = {"mag": "mag", "re_arcsec": "arcsec", "n": "", "q": "", "ellipticity": ""}
SUITE_FILES = {"integrity": "stamp_integrity.json", "labels": "labels.json", "units": "label_units.json", "shift": "domain_shift.json"}


def summarise_set(set_dir: str | Path, max_stamps: int | None = None):
    """Summary statistics of a stamp set (streamed chunk by chunk), its labels and first header."""
    from astropy.table import vstack

    from legato.io.stamps import iter_stamp_set

    columns, tables, header, seen = {}, [], None, 0
    for stamps, labels, chunk_header in iter_stamp_set(set_dir):
        if max_stamps is not None and seen >= max_stamps:
            break
        take = len(stamps) if max_stamps is None else min(len(stamps), max_stamps - seen)
        header = header if header is not None else chunk_header
        for key, values in stamp_summary(stamps[:take], float(chunk_header.get("MAGZPT", ZEROPOINT_AB["F160W"]))).items():
            columns.setdefault(key, []).append(values)
        tables.append(labels[:take])
        seen += take
    if header is None:
        raise DataError(f"{set_dir} holds no stamps")
    summary = {key: np.concatenate(parts) for key, parts in columns.items()}
    return summary, vstack(tables, metadata_conflicts="silent"), header


def label_frames(labels):
    """The labels and their units as DataFrames for the label suites."""
    import pandas as pd

    present = [c for c in labels.colnames if labels[c].ndim == 1]
    frame = labels[present].to_pandas()
    units = pd.DataFrame(
        {
            "column": list(LABEL_UNITS),
            "unit": [str(labels[c].unit or "") if c in labels.colnames else "<missing>" for c in LABEL_UNITS],
            "expected_unit": list(LABEL_UNITS.values()),
        }
    )
    return frame, units


def scaled_shift_suite(suite: dict, n: int) -> dict:
    """The shift suite for a set of ``n`` stamps: ranges widened by sqrt(batch/n) and KL thresholds by batch/n when n < batch."""
    batch = int(suite["meta"]["batch_size"])
    if n >= batch:
        return suite
    scaled = copy.deepcopy(suite)
    widen = math.sqrt(batch / n)
    for item in scaled["expectations"]:
        kwargs = item["kwargs"]
        if "threshold" in kwargs:
            kwargs["threshold"] *= batch / n
        if "min_value" in kwargs:
            centre = 0.5 * (kwargs["min_value"] + kwargs["max_value"])
            half = 0.5 * (kwargs["max_value"] - kwargs["min_value"]) * widen
            kwargs["min_value"], kwargs["max_value"] = centre - half, centre + half
        if "quantile_ranges" in kwargs:
            kwargs["quantile_ranges"]["value_ranges"] = [
                [0.5 * (lo + hi) - 0.5 * (hi - lo) * widen, 0.5 * (lo + hi) + 0.5 * (hi - lo) * widen]
                for lo, hi in kwargs["quantile_ranges"]["value_ranges"]
            ]
    return scaled


def _failure_lines(outcome: SuiteOutcome) -> list[str]:
    lines = []
    for failure in outcome.failures:
        where = f"{failure.column}: " if failure.column else ""
        lines.append(f"{outcome.suite}: {where}{failure.type} failed (observed {failure.observed}); guards against {failure.guards}")
    return lines


def validate_set(
    set_dir: str | Path,
    expectations_dir: str | Path,
    stamp_size: int,
    name: str | None = None,
    reports_dir: str | Path = "reports/validation",
    docs_dir: str | Path | None = None,
    check_shift: bool = True,
) -> dict:
    """Run the integrity, label and domain-shift suites on one stamp set.

    Parameters
    ----------
    set_dir : str or Path
        Stamp set folder.
    expectations_dir : str or Path
        Folder with the suite JSON files.
    stamp_size : int
        Expected stamp side (pixels).
    name : str, optional
        Name of the report (default: the folder name).
    reports_dir, docs_dir : str or Path
        Where the JSON report and the Data Docs HTML go.
    check_shift : bool
        Also run the domain-shift suite (needs ``domain_shift.json``).

    Returns
    -------
    dict
        ``passed`` (integrity and labels), ``failures`` (one line each),
        ``shift_flagged``, ``shift_table`` and per-suite results.
    """
    expectations_dir, reports_dir = Path(expectations_dir), Path(reports_dir)
    name = name or Path(set_dir).name
    summary, labels, _ = summarise_set(set_dir)
    import pandas as pd

    frame = pd.DataFrame(summary)
    validator = Validator()
    results = {"integrity": validator.run(frame, load_suite(expectations_dir / SUITE_FILES["integrity"]), {"stamp_size": stamp_size})}
    label_frame, unit_frame = label_frames(labels)
    results["labels"] = validator.run(label_frame, load_suite(expectations_dir / SUITE_FILES["labels"]))
    results["units"] = validator.run(unit_frame, load_suite(expectations_dir / SUITE_FILES["units"]))
    report = {"set": str(set_dir), "name": name, "n_stamps": len(frame)}
    if check_shift:
        suite = load_suite(expectations_dir / SUITE_FILES["shift"])
        results["shift"] = validator.run(frame[list(SHIFT_STATISTICS)], scaled_shift_suite(suite, len(frame)))
        report["shift_flagged"] = not results["shift"].success
        report["shift_table"] = shift_table(suite, results["shift"].expectations, summary)
    failures = [line for key in ("integrity", "labels", "units") for line in _failure_lines(results[key])]
    report.update(passed=not failures, failures=failures)
    report["suites"] = {
        key: {"success": r.success, "failed": len(r.failures), "evaluated": len(r.expectations)} for key, r in results.items()
    }
    report["results"] = {key: [vars(e) for e in r.expectations] for key, r in results.items()}
    reports_dir.mkdir(parents=True, exist_ok=True)
    docs = validator.save_docs(Path(docs_dir) if docs_dir else reports_dir / f"{name}_docs")
    report["data_docs"] = str(docs) if docs else None
    path = reports_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)
    return report


def log_validation(report: dict) -> str:
    """Log a validation report as the MLflow run ``validate-<name>`` (metrics, report, Data Docs)."""
    import mlflow

    from legato.tracking import provenance_tags

    with mlflow.start_run(run_name=f"validate-{report['name']}") as run:
        mlflow.set_tags(
            {"method": "validation", "validation": "passed" if report["passed"] else "failed", **provenance_tags(report["set"])}
        )
        metrics = {"integrity_passed": float(report["passed"]), "n_stamps": report["n_stamps"]}
        if "shift_table" in report:
            metrics["shift_flagged"] = float(report["shift_flagged"])
            for row in report["shift_table"]:
                if row["kl"] is not None and np.isfinite(row["kl"]):
                    metrics[f"kl_{row['statistic']}"] = row["kl"]
                if np.isfinite(row["median_shift_sigma"]):
                    metrics[f"median_shift_sigma_{row['statistic']}"] = row["median_shift_sigma"]
        mlflow.log_metrics(metrics)
        if report.get("data_docs"):
            mlflow.log_artifacts(str(Path(report["data_docs"]).parent), artifact_path="data_docs")
    return run.info.run_id


def build_reference(
    train_dir, calibration_dir, out_path, batch_size: int = 1000, max_reference: int = 20000, n_boot: int = 30, seed: int = 0
) -> dict:
    """Compute the domain-shift suite from the training set (partitions) and a clean calibration set (thresholds)."""
    reference, _, _ = summarise_set(train_dir, max_stamps=max_reference)
    calibration, _, _ = summarise_set(calibration_dir)
    suite = build_shift_suite(reference, calibration, batch_size, Validator(), n_boot=n_boot, seed=seed)
    suite["meta"].update(
        {"reference_set": str(train_dir), "reference_stamps": int(len(reference["flux"])), "calibration_set": str(calibration_dir)}
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(suite, indent=2) + "\n")
    tmp.replace(out_path)
    return suite
