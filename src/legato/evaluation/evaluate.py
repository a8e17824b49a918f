"""Evaluation on the held-out simulated test set: Table 1, per-bin statistics, Figure 3, MLflow."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from legato.columns import PARAMETERS
from legato.evaluation.paper import PAPER_TABLE1
from legato.evaluation.plots import figure3
from legato.io.stamps import read_stamp_set
from legato.stats import binned_statistics, r2_table
from legato.validation.scoring_set import evaluation_data_status

PAPER_SUBSET = "paper_h23"


def subset_mask(truth, mag_max: float) -> np.ndarray:
    """Rows whose true magnitude is at most ``mag_max``."""
    return np.asarray(truth["mag"], dtype=float) <= mag_max


def predictions_table(ids, values: dict) -> Table:
    """A catalogue of estimates with units (same columns for every method)."""
    table = Table({"id": np.asarray(ids)})
    units = {"mag": "mag", "re_arcsec": "arcsec"}
    for name in ("mag", "re_arcsec", "n", "q", "ellipticity"):
        table[name] = np.asarray(values[name], dtype=float)
        if name in units:
            table[name].unit = units[name]
    return table


def aligned_catalogue(table: Table, ids) -> Table:
    """``table`` reordered to ``ids``; ids it lacks become rows of NaN (not scored)."""
    from legato.errors import DataError

    if "id" not in table.colnames:
        raise DataError("catalogue has no 'id' column to match the test set")
    order = {int(i): k for k, i in enumerate(table["id"])}
    rows = np.array([order.get(int(i), -1) for i in ids])
    values = {}
    for name in ("mag", "re_arcsec", "n", "q", "ellipticity"):
        if name not in table.colnames:
            raise DataError(f"catalogue has no {name!r} column")
        column = np.asarray(table[name], dtype=float)
        values[name] = np.where(rows >= 0, column[np.clip(rows, 0, None)], np.nan)
    aligned = predictions_table(ids, values)
    if "flags" in table.colnames:
        aligned["flags"] = np.where(rows >= 0, np.asarray(table["flags"])[np.clip(rows, 0, None)], -1)
    return aligned


def scored(estimates) -> np.ndarray:
    """Rows where a method returned every parameter."""
    return np.logical_and.reduce([np.isfinite(np.asarray(estimates[c], dtype=float)) for c in ("mag", "re_arcsec", "n", "ellipticity")])


def predict_with_estimators(stamps, ids, estimators: dict[str, Path]) -> tuple[dict[str, Table], dict[str, float]]:
    """Run each estimator folder on the stamps; return catalogues and stamps/s per method."""
    from legato.models.estimator import LoadedEstimator

    catalogues, speed = {}, {}
    for method, folder in estimators.items():
        estimator = LoadedEstimator(folder)
        estimator.predict(stamps[:64])  # warm-up (graph building) outside the timing
        start = time.perf_counter()
        values = estimator.predict(stamps)
        speed[method] = len(stamps) / (time.perf_counter() - start)
        catalogues[method] = predictions_table(ids, values)
    return catalogues, speed


def evaluate(
    test_dir: str | Path,
    estimators: dict[str, Path],
    catalogues: dict[str, Path] | None,
    subsets: dict[str, float],
    mag_bins,
    reports_dir: str | Path = "reports",
    predictions_dir: str | Path = "datasets/predictions",
    validation_report: str | Path | None = None,
    crb: dict | None = None,
    fit_quality: dict | None = None,
) -> dict:
    """Score every method on the test set and write the reports.

    Parameters
    ----------
    test_dir : str or Path
        Simulated test stamp set.
    estimators : dict of str to Path
        Network estimator folders by method name (e.g. ``arch1``).
    catalogues : dict of str to Path, optional
        Already computed catalogues (e.g. the classical fitter's) by method name,
        with an ``id`` column matching the test set.
    subsets : dict of str to float
        Subset name to faintest magnitude (Table 1 is given for each).
    mag_bins : sequence of float
        Magnitude bin edges of the per-bin statistics and Figure 3.
    reports_dir, predictions_dir : str or Path
        Where reports and prediction catalogues go.
    validation_report : str or Path, optional
        The Great Expectations report of the test set (``legato validate``);
        its verdict joins the evaluation's own data check in the ``validation`` tag.
    crb : dict, optional
        ``{"table": path, "mag_bins": edges}``: the per-galaxy Cramér-Rao bounds of the
        test set (``legato crb``). Table 1 then gains the ``limit`` column and
        ``reports/crb.json`` the efficiency of every method (:mod:`legato.evaluation.efficiency`).
    fit_quality : dict, optional
        ``{"psf": PSF image, "chi2_threshold": float}``: every method's estimates get the
        goodness of fit of their model (``chi2_nu``, ``residual_flux_fraction``,
        ``residual_asymmetry`` columns in its predictions, a summary in
        ``evaluation.json``), and its worst and typical galaxies are drawn as stamp |
        model | residual (``reports/figures/gallery_<method>.png``, logged to its MLflow run).

    Returns
    -------
    dict
        The Table 1 content.
    """
    reports_dir, predictions_dir = Path(reports_dir), Path(predictions_dir)
    stamps, truth, header = read_stamp_set(test_dir)
    methods, speed = predict_with_estimators(stamps, truth["id"], estimators)
    for method, path in (catalogues or {}).items():
        methods[method] = aligned_catalogue(Table.read(path), truth["id"])

    table1: dict = {}
    binned: dict = {}
    for subset, mag_max in subsets.items():
        mask = subset_mask(truth, mag_max)
        scores = {m: r2_table(truth[mask], est[mask]) for m, est in methods.items()}
        counts = {m: int(np.sum(mask & scored(est))) for m, est in methods.items()}
        for m, est in methods.items():
            if "flags" in est.colnames:  # a fitter's catalogue: also score its unflagged rows alone
                clean = mask & scored(est) & (np.asarray(est["flags"]) == 0)
                scores[f"{m}_unflagged"] = r2_table(truth[clean], est[clean])
                counts[f"{m}_unflagged"] = int(clean.sum())
        if subset == PAPER_SUBSET:
            table1.update(scores)
        else:
            table1[subset] = scores
        table1.setdefault("n_test", {})[subset] = int(mask.sum())
        table1.setdefault("n_scored", {})[subset] = counts
        common = mask & np.logical_and.reduce([scored(est) for est in methods.values()])
        if common.sum() < mask.sum():  # a method (e.g. the classical fitter) covers part of the set
            table1.setdefault("same_galaxies", {})[subset] = {
                "n": int(common.sum()),
                **{m: r2_table(truth[common], est[common]) for m, est in methods.items()},
            }
    table1["paper_reference"] = PAPER_TABLE1
    table1["validation"] = evaluation_data_status(stamps, truth)
    if validation_report is not None and table1["validation"] == "passed":
        report = json.loads(Path(validation_report).read_text())
        if not report.get("passed", False):
            table1["validation"] = "failed: " + "; ".join(report.get("failures", [])[:3])
    for method, est in methods.items():
        binned[method] = binned_statistics(truth, est, mag_bins)
    exposure_time = float(header["EXPTIME"]) if "EXPTIME" in header else None
    goodness = {}
    if fit_quality is not None:
        from legato.evaluation.gallery import add_goodness_of_fit

        goodness = add_goodness_of_fit(stamps, methods, fit_quality["psf"], exposure_time, fit_quality["chi2_threshold"])

    predictions_dir.mkdir(parents=True, exist_ok=True)
    for method, est in methods.items():
        est.write(predictions_dir / f"{method}_test.fits", overwrite=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    evaluation = {"binned": binned, "cnn_stamps_per_second": {m: round(v, 1) for m, v in speed.items()}, "mag_bins": list(mag_bins)}
    if goodness:
        evaluation["goodness_of_fit"] = goodness
    (reports_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    write_plot_tables(binned, mag_bins, reports_dir / "plots")
    figure = figure3(truth, methods, mag_bins, reports_dir / "figures" / "figure3.png", title="input - output, simulated test set")
    figures = [figure]
    if crb is not None:
        figures.append(write_efficiency(truth, methods, crb, subsets, table1, reports_dir))
    (reports_dir / "table1.json").write_text(json.dumps(table1, indent=2) + "\n")
    galleries = {}
    if fit_quality is not None:
        from legato.evaluation.gallery import method_galleries

        galleries = method_galleries(stamps, truth, methods, fit_quality["psf"], exposure_time, reports_dir / "figures")
    log_to_mlflow(estimators, catalogues or {}, table1, subsets, figures, galleries)
    return table1


def write_efficiency(truth, methods: dict, crb: dict, subsets: dict, table1: dict, reports_dir: Path) -> Path:
    """Score every method against the Cramér-Rao bound: reports/crb.json, its figure and plot tables.

    Adds the ``limit`` column (R² of an efficient unbiased estimator) to ``table1`` and
    each method's RMSE / CRB ratio per subset to the ``efficiency`` block; returns the figure.
    """
    from legato.evaluation.efficiency import aligned_bounds, efficiency_figure, efficiency_report, write_efficiency_plots

    table_path = Path(crb["table"])
    bound_table = Table.read(table_path)
    report = efficiency_report(truth, methods, aligned_bounds(bound_table, truth["id"]), subsets, crb["mag_bins"])
    report["bounds"] = {
        "table": str(table_path),
        "galaxies": len(bound_table),
        "valid": int(np.sum(np.asarray(bound_table["crb_flags"]) == 0)),
    }
    for subset, block in report["subsets"].items():
        target = table1 if subset == PAPER_SUBSET else table1[subset]
        target["limit"] = block["limit_r2"]
        table1.setdefault("efficiency", {})[subset] = {m: v["ratio"] for m, v in block["methods"].items()}
    (reports_dir / "crb.json").write_text(json.dumps(report, indent=2) + "\n")
    write_efficiency_plots(report, reports_dir / "plots")
    return efficiency_figure(report, reports_dir / "figures" / "crb_efficiency.png")


def write_plot_tables(binned: dict, mag_bins, folder: Path) -> None:
    """CSV tables (one per parameter) of the per-bin scatter, for ``dvc plots``."""
    folder.mkdir(parents=True, exist_ok=True)
    centres = [0.5 * (lo + hi) for lo, hi in zip(mag_bins[:-1], mag_bins[1:])]
    for p in PARAMETERS:
        with open(folder / f"scatter_{p}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["mag", *[f"{m}" for m in binned]])
            for k, centre in enumerate(centres):
                writer.writerow([centre, *[binned[m][p][k]["scatter"] for m in binned]])


def _run_id(folder: Path) -> str | None:
    path = Path(folder) / "run.json"
    return json.loads(path.read_text()).get("run_id") if path.is_file() else None


def log_to_mlflow(
    estimators: dict, catalogues: dict, table1: dict, subsets: dict, figures: list[Path], galleries: dict | None = None
) -> None:
    """Add the test metrics, the shared figures and the method's own gallery to each method's MLflow run."""
    import mlflow

    for method, folder in {**estimators, **catalogues}.items():
        folder = Path(folder)
        run_id = _run_id(folder if folder.is_dir() else folder.parent)
        if run_id is None:
            continue
        metrics = {}
        for subset in subsets:
            scores = table1[method] if subset == PAPER_SUBSET else table1[subset][method]
            metrics.update({f"test_r2_{p}_{subset}": v for p, v in scores.items() if np.isfinite(v)})
            ratios = table1.get("efficiency", {}).get(subset, {}).get(method, {})
            metrics.update({f"test_rmse_over_crb_{p}_{subset}": v for p, v in ratios.items() if v is not None})
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics)
            mlflow.set_tag("validation", table1["validation"].split(":")[0])
            mlflow.set_tag("validation_detail", table1["validation"])
            for figure in [*figures, *([galleries[method]] if method in (galleries or {}) else [])]:
                mlflow.log_artifact(str(figure), artifact_path="evaluation")
