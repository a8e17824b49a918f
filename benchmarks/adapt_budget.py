"""Benchmark: does a longer fine-tuning budget close the gap to classical versus classical?

Fine-tunes the production estimator (the set-up ``legato adapt`` chose, from
params.yaml and reports/figure5.json) on the largest labelled subset of pool B
(the first seed's split, as the adapt stage does) with several step budgets,
and scores each on test A beside Table 2's classical-versus-classical column.
Writes reports/adapt_budget.json.

    python benchmarks/adapt_budget.py --steps 300 1000 3000     # ~5 min on 2 cores
    python benchmarks/adapt_budget.py --base models/scenes_tracked --setup frozen_block1 \
        --steps 300 1000 3000 10000 --report reports/adapt_budget_scenes.json   # the scene-trained base, ~5 min
    python benchmarks/adapt_budget.py --deblend 0 --setup frozen_block1 --steps 3000 \
        --report reports/adapt_budget_deblended.json   # B and A seen with their neighbours removed, as `legato deblend` does

``--deblend GROW_PIX`` fine-tunes and scores on the stamps with the blend detector's neighbours removed
(:func:`legato.models.deblending.deblended_stamps`, the input of a deblended estimator).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _relative(path) -> str:
    """``path`` relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _averaged(model, base, stamps: np.ndarray, symmetries: int) -> dict:
    """The network's estimates of ``stamps`` averaged over ``symmetries`` flips/rotations (:mod:`legato.symmetry`)."""
    from legato.symmetry import average_estimates, dihedral
    from legato.training.adapt import predict_network

    passes = []
    for code in range(symmetries):
        flipped = stamps if code == 0 else dihedral(stamps, np.full(len(stamps), code))
        passes.append(predict_network(model, base.scaler, flipped, base.psf))
    return average_estimates(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--report", type=Path, default=REPO / "reports/adapt_budget.json")
    parser.add_argument("--base", type=Path, default=None, help="estimator fine-tuned (default: params adapt.base)")
    parser.add_argument("--setup", default=None, help="set-up of params adapt.setups (default: the one reports/figure5.json chose)")
    parser.add_argument("--symmetries", type=int, default=1, help="also score the average over this many flips/rotations")
    parser.add_argument("--deblend", type=int, default=None, metavar="GROW_PIX", help="remove the neighbours first, grown by GROW_PIX")
    args = parser.parse_args()

    import keras

    from legato.config import load_params, section
    from legato.io.stamps import load_split
    from legato.stats import r2_table
    from legato.training.adapt import AdaptationBase, AdaptConfig, fit_network, nested_subsets

    options = section(load_params(REPO / "params.yaml"), "adapt")
    config = AdaptConfig.from_params(options)
    chosen = args.setup or json.loads((REPO / "reports/figure5.json").read_text())["selection"]["chosen"]
    setup = config.setups[chosen]
    base_dir = args.base or REPO / options["base"]
    base = AdaptationBase(base_dir)
    test_x, test_labels, _ = load_split(REPO / "datasets/realistic/labelled/A")
    pool_x, pool_labels, _ = load_split(REPO / "datasets/realistic/labelled/B")
    if args.deblend is not None:
        from legato.models.deblending import deblended_stamps

        test_x, pool_x = deblended_stamps(test_x, args.deblend), deblended_stamps(pool_x, args.deblend)
    seed = int(config.seeds[0])
    size = len(pool_x)
    train_rows, val_rows = nested_subsets(size, [size], config.validation_fraction, seed)[size]
    train, val = (pool_x[train_rows], pool_labels[train_rows]), (pool_x[val_rows], pool_labels[val_rows])
    table2 = json.loads((REPO / "reports/table2.json").read_text())
    runs = []
    for steps in args.steps:
        keras.utils.set_random_seed(seed + size)
        budget = replace(config, max_steps=int(steps), epochs=10_000)
        model = base.finetuned(setup)
        start = time.perf_counter()
        fit = fit_network(model, base.scaler, base.loss, train, val, budget, setup.learning_rate, seed, base.psf)
        r2 = r2_table(test_labels, _averaged(model, base, test_x, 1))
        averaged = {}
        if args.symmetries > 1:
            r2_k = r2_table(test_labels, _averaged(model, base, test_x, args.symmetries))
            averaged = {f"A_r2_symmetries{args.symmetries}": {p: round(float(v), 4) for p, v in r2_k.items()}}
        runs.append(
            {
                "max_steps": int(steps),
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in fit.items()},
                "wall_seconds": round(time.perf_counter() - start, 1),
                "A_r2": {p: round(float(v), 4) for p, v in r2.items()},
                **averaged,
            }
        )
        print(f"{steps} steps: {runs[-1]['A_r2']} {averaged} ({runs[-1]['wall_seconds']} s)", flush=True)
    from legato.reports import machine_description

    report = {
        "machine": machine_description(),
        "base": _relative(base_dir),
        "deblend_grow_pix": args.deblend,
        "setup": {"name": chosen, "frozen_prefixes": list(setup.frozen_prefixes), "learning_rate": setup.learning_rate},
        "size": size,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "seed": seed,
        "n_test": len(test_x),
        "classical_vs_classical": table2["classical_vs_classical"],
        "runs": runs,
        "command": "python benchmarks/adapt_budget.py "
        + (f"--base {args.base} " if args.base else "")
        + (f"--setup {args.setup} " if args.setup else "")
        + (f"--deblend {args.deblend} " if args.deblend is not None else "")
        + (f"--symmetries {args.symmetries} " if args.symmetries > 1 else "")
        + "--steps "
        + " ".join(map(str, args.steps))
        + (f" --report {_relative(args.report)}" if args.report != REPO / "reports/adapt_budget.json" else ""),
    }
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
