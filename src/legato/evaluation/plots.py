"""Figure 3 of the paper: input - output per parameter in 1-mag bins, box plots per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legato.columns import COLUMN, PARAMETERS, RELATIVE
from legato.figures import save_figure
from legato.stats import errors

LABELS = {
    "mag": r"$\Delta$ mag (input $-$ output)",
    "re": r"$\Delta r_e / r_e$",
    "n": r"$\Delta n / n$",
    "ellipticity": r"$\Delta$ ellipticity",
}


def figure3(truth, estimates: dict, edges, path: str | Path, title: str = "") -> Path:
    """Draw the box plots (boxes = quartiles, whiskers = 1.5 IQR, outliers as points) and save a PNG.

    Parameters
    ----------
    truth : table-like
        True parameters (``mag, re_arcsec, n, ellipticity``).
    estimates : dict of str to table-like
        Estimates per method, rows aligned with ``truth``.
    edges : sequence of float
        Magnitude bin edges (true magnitude).
    path : str or Path
        Output PNG.
    title : str
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(estimates)
    mag = np.asarray(truth["mag"], dtype=float)
    centres = 0.5 * (np.asarray(edges[:-1]) + np.asarray(edges[1:]))
    fig, axes = plt.subplots(len(PARAMETERS), 1, figsize=(9, 2.6 * len(PARAMETERS)), sharex=True)
    width = 0.8 / max(len(methods), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, p in zip(axes, PARAMETERS):
        for k, method in enumerate(methods):
            err = errors(p, truth[COLUMN[p]], estimates[method][COLUMN[p]])
            data = [err[(mag >= lo) & (mag < hi) & np.isfinite(err)] for lo, hi in zip(edges[:-1], edges[1:])]
            positions = np.arange(len(centres)) + (k - (len(methods) - 1) / 2) * width
            box = ax.boxplot(
                data,
                positions=positions,
                widths=width * 0.9,
                whis=1.5,
                patch_artist=True,
                flierprops={"markersize": 1.5, "alpha": 0.4, "markeredgecolor": colors[k % len(colors)]},
            )
            for patch in box["boxes"]:
                patch.set_facecolor(colors[k % len(colors)])
                patch.set_alpha(0.5)
            ax.plot([], [], color=colors[k % len(colors)], lw=6, alpha=0.5, label=method)
        ax.axhline(0.0, color="k", lw=0.7)
        ax.set_ylabel(LABELS[p])
        limit = 0.6 if p in RELATIVE else (0.5 if p == "mag" else 0.25)
        ax.set_ylim(-limit, limit)
    axes[0].legend(loc="upper left", ncol=len(methods), fontsize=8)
    axes[-1].set_xticks(np.arange(len(centres)))
    axes[-1].set_xticklabels([f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])])
    axes[-1].set_xlabel("input F160W magnitude (AB)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
