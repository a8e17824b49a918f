"""Benchmark: does the goodness of fit of a network's estimate say when to distrust it?

1. Simulated test set (single Sérsic galaxies, white noise): the production
   estimator's estimates, their model's reduced chi², residual flux fraction and
   residual asymmetry (``legato predict --residuals``), and the same statistics
   for the true parameters' model (pure noise: chi² about 1). The worst 1% of the
   estimates (by the summed squared standardised errors of mag, re, n, e) are the
   ones to catch; the chi² threshold is set so that 1% of the other 99% are
   flagged (the false-flag rate), and the report gives the fraction of the worst
   1% caught there and the AUC of each statistic.
2. Realistic test A (bulge+disc, clumpy, real COSMOS galaxies, neighbours; drizzle-
   correlated noise): how well each statistic separates non-Sérsic or blended
   galaxies from the isolated Sérsic ones (AUC), and the fraction flagged at the
   threshold of 1 per kind and with/without neighbours.
3. With ``--network-start``: classical fits started from the production
   estimator's estimate against the moments start on the same stamps (fits per
   second per core, restarts, at-limit/failed fractions, R²): all simulated test
   stamps (the moments start is ``--classical`` when that catalogue was started from
   the moments, else fitted here)
   and the first ``--realistic-fits`` stamps of test A (both starts fitted here,
   with the realistic labels' set-up: neighbours masked). Fits resume from their
   parts if interrupted.

Writes reports/goodness_of_fit.json.

    python benchmarks/goodness_of_fit.py --estimator models/production_tracked --network-start
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

STATISTICS = ("chi2_nu", "residual_flux_fraction", "residual_asymmetry")


def auc(positive, negative) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative (ties count half)."""
    from scipy.stats import mannwhitneyu

    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    positive, negative = positive[np.isfinite(positive)], negative[np.isfinite(negative)]
    if not len(positive) or not len(negative):
        return float("nan")
    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def network_statistics(estimator, stamps, exposure_time, renderer, workers: int) -> tuple[dict, dict, float]:
    """The estimator's values and the goodness of fit of their models; seconds spent on the statistics."""
    from legato.inference.measurements import AugmentedEstimator, ResidualAugmentation

    values = estimator.predict(stamps)
    start = time.perf_counter()
    with AugmentedEstimator(estimator, [ResidualAugmentation(renderer, np.inf, exposure_time)], workers) as augmented:
        measured = augmented.augment(values, stamps)
    return values, {name: measured[name] for name in STATISTICS}, time.perf_counter() - start


def crb_failures(crb_path: Path, truth, values) -> np.ndarray:
    """The 1% of galaxies with a valid bound whose errors, in units of their Cramér-Rao bound, are largest."""
    from astropy.table import Table

    from legato.columns import COLUMN
    from legato.evaluation.efficiency import aligned_bounds
    from legato.modelling.bounds import BOUND_COLUMNS

    bounds = aligned_bounds(Table.read(crb_path), truth["id"])
    score = sum(
        ((np.asarray(values[COLUMN[p]], float) - np.asarray(truth[COLUMN[p]], float)) / bounds[column]) ** 2
        for p, column in BOUND_COLUMNS.items()
    )
    finite = np.isfinite(score)
    return finite & (score >= np.percentile(score[finite], 99))


def true_model_chi2(stamps, truth, renderer, sky_sigma, exposure_time) -> np.ndarray:
    """Reduced chi² of the true parameters' model (true position angle and centre) of every stamp."""
    from legato.modelling.renderer import Geometry
    from legato.modelling.statistics import fit_statistics

    order = np.argsort(np.asarray(truth["n"]), kind="stable")
    chi2 = np.full(len(stamps), np.nan)
    for k in order:
        row = truth[k]
        geometry = Geometry(float(row["pa_deg"]), float(row["x_offset_pix"]), float(row["y_offset_pix"]))
        model = renderer.render(row["mag"], row["re_arcsec"], row["n"], row["ellipticity"], geometry)
        chi2[k] = fit_statistics(stamps[k], model, sky_sigma, exposure_time).chi2_nu
    return chi2


def percentiles(values) -> dict:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (1, 16, 50, 84, 99)}


def simulated_block(args, estimator, renderer) -> tuple[dict, float, dict]:
    from legato.evaluation.gallery import error_score
    from legato.io.stamps import read_stamp_set

    stamps, truth, header = read_stamp_set(args.test)
    stamps = stamps.astype(np.float64)
    exposure_time = float(header["EXPTIME"])
    values, statistics, seconds = network_statistics(estimator, stamps, exposure_time, renderer, args.workers)
    score = error_score(truth, values)
    finite = np.isfinite(score) & np.isfinite(statistics["chi2_nu"])
    worst = finite & (score >= np.percentile(score[finite], 99))
    good = finite & ~worst
    threshold = float(np.percentile(statistics["chi2_nu"][good], 99))
    method_failures = crb_failures(args.crb, truth, values) & np.isfinite(statistics["chi2_nu"])
    chi2_truth = true_model_chi2(stamps, truth, renderer, float(header["SKYSIG"]), exposure_time)
    return (
        {
            "stamps": len(stamps),
            "chi2_true_model": percentiles(chi2_truth),
            "chi2_estimate": percentiles(statistics["chi2_nu"]),
            "worst_1_percent": int(worst.sum()),
            "chi2_threshold_at_1_percent_false_flags": round(threshold, 3),
            "false_flag_rate": round(float(np.mean(statistics["chi2_nu"][good] > threshold)), 4),
            "worst_caught_at_threshold": round(float(np.mean(statistics["chi2_nu"][worst] > threshold)), 4),
            "auc_worst_vs_rest": {name: round(auc(statistics[name][worst], statistics[name][good]), 4) for name in STATISTICS},
            "method_failures_1_percent": {
                "definition": (
                    "the 1% of galaxies with a valid Cramér-Rao bound whose errors are largest in units of their "
                    "bound (sum over mag, re, n, e of (error / CRB)^2): errors the noise does not explain"
                ),
                "n": int(method_failures.sum()),
                "caught_at_threshold": round(float(np.mean(statistics["chi2_nu"][method_failures] > threshold)), 4),
                "auc_vs_rest": {
                    name: round(auc(statistics[name][method_failures], statistics[name][~method_failures]), 4) for name in STATISTICS
                },
            },
            "statistics_seconds_per_stamp_per_worker": round(seconds * args.workers / len(stamps), 5),
        },
        threshold,
        estimates_by_id(truth["id"], values),
    )


def realistic_block(args, estimator, renderer, threshold: float) -> tuple[dict, dict]:
    from legato.io.stamps import read_stamp_set

    stamps, labels, header = read_stamp_set(args.realistic)
    stamps = stamps.astype(np.float64)
    values, statistics, _ = network_statistics(estimator, stamps, float(header["EXPTIME"]), renderer, args.workers)
    kind = np.asarray(labels["kind"]).astype(str)
    blended = np.asarray(labels["n_neighbours"]) > 0
    clean = (kind == "sersic") & ~blended
    flagged = statistics["chi2_nu"] > threshold
    groups = {f"{k}{' + neighbours' if b else ''}": (kind == k) & (blended == b) for k in sorted(set(kind)) for b in (False, True)}
    return {
        "stamps": len(stamps),
        "noise_correlation_note": (
            "drizzle-like correlated sky noise: chi2 uses the per-pixel sigma only, so it runs above 1 on every galaxy"
        ),
        "chi2_isolated_sersic": percentiles(statistics["chi2_nu"][clean]),
        "auc_not_sersic_or_blended_vs_isolated_sersic": {
            name: round(auc(statistics[name][~clean], statistics[name][clean]), 4) for name in STATISTICS
        },
        "auc_blended_vs_isolated_same_kind": {
            name: round(auc(statistics[name][blended], statistics[name][~blended]), 4) for name in STATISTICS
        },
        "flagged_fraction_at_threshold": {
            g: {"n": int(m.sum()), "flagged": round(float(np.mean(flagged[m])), 3)} for g, m in groups.items() if m.any()
        },
    }, estimates_by_id(labels["id"], values)


def estimates_by_id(ids, values) -> dict:
    """Network estimates as fit starts: id -> (mag, re_arcsec, n, ellipticity)."""
    from legato.columns import SERSIC_COLUMNS

    stacked = np.stack([np.asarray(values[c], float) for c in SERSIC_COLUMNS], axis=1)
    return {int(i): v for i, v in zip(ids, stacked)}


def fit_both_starts(
    set_dir: Path, settings, psf: Path, starts: dict, folder: Path, max_stamps: int | None, moments: Path | None = None
) -> tuple[Path, Path]:
    """Classical fits of a set from the moments (unless already given) and from the network's estimates."""
    from legato.classical.run import fit_stamp_set

    folder.mkdir(parents=True, exist_ok=True)
    if moments is None:
        moments = folder / "moments.fits"
        fit_stamp_set(set_dir, moments, psf, settings, block_size=25, max_stamps=max_stamps, progress=False)
    network = folder / "network.fits"
    fit_stamp_set(set_dir, network, psf, settings, block_size=25, max_stamps=max_stamps, progress=False, starts=starts)
    return moments, network


def network_start_block(moments_path: Path, network_path: Path, truth=None) -> dict:
    """Both starts on the same stamps: speed, restarts, at-limit/failed fractions, R² (against the truth when given)."""
    from astropy.table import Table

    from legato.classical.fitter import FLAG_AT_LIMIT, FLAG_FIT_ERROR, FLAG_NOT_CONVERGED
    from legato.stats import r2_table

    result = {}
    tables = {"moments": Table.read(moments_path), "network": Table.read(network_path)}
    common = np.intersect1d(tables["moments"]["id"], tables["network"]["id"])
    for start, table in tables.items():
        table = table[np.isin(table["id"], common)]
        table.sort("id")
        flags = np.asarray(table["flags"])
        block = {
            "fits": len(table),
            "seconds_per_fit_mean": round(float(np.mean(table["fit_seconds"])), 4),
            "fits_per_second_per_core": round(float(1.0 / np.mean(table["fit_seconds"])), 3),
            "mean_function_evaluations": round(float(np.mean(table["n_evaluations"])), 1),
            "restarted_fraction": round(float(np.mean(np.asarray(table["n_starts"]) > 1)), 4),
            "at_limit_fraction": round(float(np.mean(flags & FLAG_AT_LIMIT > 0)), 4),
            "failed_fraction": round(float(np.mean(flags & (FLAG_FIT_ERROR | FLAG_NOT_CONVERGED) > 0)), 4),
        }
        if truth is not None:
            aligned = truth[np.isin(truth["id"], common)]
            aligned.sort("id")
            for subset, limit in (("h23", 23.0), ("h245", 24.5)):
                mask = np.asarray(aligned["mag"]) <= limit
                block[f"r2_{subset}"] = {p: round(v, 4) for p, v in r2_table(aligned[mask], table[mask]).items()}
        result[start] = block
    if truth is None:  # no truth (realistic galaxies): how far the two starts' fits agree
        first, second = (tables[s][np.isin(tables[s]["id"], common)] for s in ("moments", "network"))
        first.sort("id")
        second.sort("id")
        result["r2_network_start_vs_moments_start"] = {p: round(v, 4) for p, v in r2_table(first, second).items()}
    result["speedup_network_over_moments"] = round(result["moments"]["seconds_per_fit_mean"] / result["network"]["seconds_per_fit_mean"], 3)
    # seconds per fit depend on what else ran on the machine during each fit; the function evaluations do not
    result["function_evaluations_moments_over_network"] = round(
        result["moments"]["mean_function_evaluations"] / result["network"]["mean_function_evaluations"], 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", type=Path, default=Path("models/production_tracked"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--realistic", type=Path, default=Path("datasets/realistic/A"))
    parser.add_argument("--crb", type=Path, default=Path("datasets/crb/test.fits"), help="Cramér-Rao bounds of --test (legato crb)")
    parser.add_argument("--psf", type=Path, default=Path("data/psf/wfc3ir_f160w_psf.fits"))
    parser.add_argument(
        "--network-start", action="store_true", help="also compare network-started classical fits with moments-started ones"
    )
    parser.add_argument("--classical", type=Path, default=Path("datasets/classical/test.fits"), help="moments-started fits of --test")
    parser.add_argument("--realistic-fits", type=int, default=400, help="test A stamps fitted from both starts")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/goodness_of_fit.json"))
    args = parser.parse_args()

    from legato.classical.fitter import FitSettings
    from legato.config import load_params
    from legato.conventions import PIXEL_SCALE_ARCSEC, ZEROPOINT_AB
    from legato.io.stamps import read_labels
    from legato.modelling.renderer import ModelRenderer
    from legato.models.estimator import LoadedEstimator
    from legato.simulation.psf import read_psf_image

    estimator = LoadedEstimator(args.estimator)
    renderer = ModelRenderer(read_psf_image(args.psf).galsim_profile())
    simulated, threshold, simulated_starts = simulated_block(args, estimator, renderer)
    report = {"estimator": str(args.estimator), "simulated_test": simulated}
    realistic_starts = None
    if args.realistic.is_dir():
        report["realistic_test_a"], realistic_starts = realistic_block(args, estimator, renderer, threshold)
    if args.network_start:
        params = load_params(args.params)
        zeropoint = ZEROPOINT_AB["F160W"]
        settings = FitSettings.from_params(params["classical"], PIXEL_SCALE_ARCSEC, zeropoint)
        from astropy.table import Table

        given = (
            args.classical if args.classical.is_file() and Table.read(args.classical).meta.get("START", "moments") == "moments" else None
        )
        moments, network = fit_both_starts(args.test, settings, args.psf, simulated_starts, Path("datasets/classical_network"), None, given)
        report["network_start"] = {"simulated_test": network_start_block(moments, network, read_labels(args.test))}
        if realistic_starts is not None:
            settings = FitSettings.from_params(params["realistic_labels"]["main"], PIXEL_SCALE_ARCSEC, zeropoint)
            moments, network = fit_both_starts(
                args.realistic, settings, args.psf, realistic_starts, Path("datasets/classical_realistic_a"), args.realistic_fits
            )
            report["network_start"]["realistic_test_a"] = network_start_block(moments, network)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
