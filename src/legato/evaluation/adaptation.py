"""Reports of the domain adaptation: Figure 5, Table 2, the real check and the issue's targets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from legato.columns import PARAMETERS
from legato.evaluation.paper import PAPER_TABLE2
from legato.figures import save_figure
from legato.reports import write_json


def adaptation_targets(curve: dict, after: dict, classical: dict, small: int = 400, tolerance: float = 0.02) -> dict:
    """Check the three targets of the adaptation benchmark.

    - the fine-tuned curve above the from-scratch curve at every size (per parameter);
    - with at most ``small`` galaxies, fine-tuned R² within ``tolerance`` of the largest size's for mag and ellipticity;
    - after adaptation, R² at or above the classical-versus-classical R² for every parameter.
    """
    sizes = np.asarray(curve["sizes"])
    above = {p: bool(np.all(np.asarray(curve["finetuned"][p], float) > np.asarray(curve["scratch"][p], float))) for p in PARAMETERS}
    largest = int(np.argmax(sizes))
    within = {}
    for p in ("mag", "ellipticity"):
        values = np.asarray(curve["finetuned"][p], float)
        gaps = values[largest] - values[sizes <= small]
        within[p] = {"largest_gap": round(float(gaps.max()), 4) if gaps.size else None, "met": bool(gaps.size and gaps.max() <= tolerance)}
    versus = {
        p: {
            "after": after.get(p),
            "classical_vs_classical": classical.get(p),
            "met": after.get(p) is not None and classical.get(p) is not None and after[p] >= classical[p],
        }
        for p in PARAMETERS
    }
    return {
        "finetuned_above_scratch_at_every_size": above,
        f"small_within_{tolerance}_of_largest": within,
        "after_at_least_classical_vs_classical": versus,
    }


def figure5(curve: dict, path: str | Path, before: dict | None = None) -> Path:
    """R² on test A versus |B_i|, fine-tuned versus from scratch (mean and seed-to-seed standard deviation), one panel per parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PARAMETERS), figsize=(4 * len(PARAMETERS), 3.4), sharex=True)
    n_seeds = len(curve.get("seeds", [])) or 1
    for ax, p in zip(axes, PARAMETERS):
        for method, marker, color, label in (
            ("finetuned", "o-", "tab:blue", "fine-tuned (simulation weights)"),
            ("scratch", "s-", "tab:red", "from scratch"),
        ):
            spread = curve.get(f"{method}_std", {}).get(p)
            ax.errorbar(
                curve["sizes"],
                curve[method][p],
                yerr=spread,
                fmt=marker,
                color=color,
                capsize=2,
                label=f"{label}, mean ± sd of {n_seeds} seeds" if spread else label,
            )
        if before and before.get(p) is not None:
            ax.axhline(before[p], color="grey", ls=":", label="before adaptation")
        ax.set_xscale("log")
        ax.set_title(p)
        ax.set_xlabel("|B_i| (galaxies)")
        low = min(np.nanmin(np.asarray(curve["scratch"][p], float)), np.nanmin(np.asarray(curve["finetuned"][p], float)))
        ax.set_ylim(max(low - 0.05, -0.5), 1.0)
    axes[0].set_ylabel("R² on test A")
    axes[0].legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def write_adaptation_reports(result: dict, reports: str | Path) -> list[Path]:
    """Write figure5.json, table2.json, real_check.json, plots/figure5.csv and figures/figure5.png.

    Parameters
    ----------
    result : dict
        Output of :func:`legato.training.adapt.adaptation_curve` with ``classical_vs_classical`` and ``real_check`` added.
    reports : str or Path
        Reports folder.

    Returns
    -------
    list of Path
    """
    reports = Path(reports)
    curve = result["figure5"]
    classical = result["classical_vs_classical"]
    targets = adaptation_targets(curve, result["after"], classical["r2"])
    written = [
        write_json(
            reports / "figure5.json",
            {
                **{k: curve[k] for k in curve if k != "runs"},
                "selection": result.get("selection"),
                "runs": curve["runs"],
                "n_test": result["n_test"],
                "n_pool": result.get("n_pool"),
                "parent_run_id": result["parent_run_id"],
                "targets": {k: v for k, v in targets.items() if k != "after_at_least_classical_vs_classical"},
            },
        ),
        write_json(
            reports / "table2.json",
            {
                "before": result["before"],
                "after": result["after"],
                "after_std_over_seeds": result.get("after_std"),
                "seeds": curve.get("seeds"),
                "classical_vs_classical": classical["r2"],
                "n_test": result["n_test"],
                "n_classical_vs_classical": classical["n"],
                "adapted_on": result["adapted_on"],
                "adapted_from": result.get("adapted_from"),
                "finetuning_setup": (result.get("selection") or {}).get("chosen"),
                "adapted_model_uri": result["model_uri"],
                "paper": PAPER_TABLE2,
                "targets": targets,
            },
        ),
    ]
    if result.get("real_check") is not None:
        written.append(write_json(reports / "real_check.json", result["real_check"]))
    plot = reports / "plots" / "figure5.csv"
    plot.parent.mkdir(parents=True, exist_ok=True)
    with plot.open("w", newline="") as handle:
        writer = csv.writer(handle)
        columns = [m for m in ("finetuned", "scratch", "finetuned_std", "scratch_std") if m in curve]
        writer.writerow(["size", *(f"{m}_{p}" for m in columns for p in PARAMETERS)])
        for k, size in enumerate(curve["sizes"]):
            writer.writerow([size, *(curve[m][p][k] for m in columns for p in PARAMETERS)])
    written += [plot, figure5(curve, reports / "figures" / "figure5.png", result["before"])]
    return written
