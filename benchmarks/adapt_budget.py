"""Benchmark: does a longer fine-tuning budget close the gap to classical versus classical?

Fine-tunes the production estimator (the set-up ``legato adapt`` chose, from
params.yaml and reports/figure5.json) on the largest labelled subset of pool B
(the first seed's split, as the adapt stage does) with several step budgets,
and scores each on test A beside Table 2's classical-versus-classical column.
Writes reports/adapt_budget.json.

    python benchmarks/adapt_budget.py --steps 300 1000 3000     # ~5 min on 2 cores
    python benchmarks/adapt_budget.py --base models/scenes_tracked --setup frozen_block1 \
        --steps 300 1000 3000 10000 --report reports/adapt_budget_scenes.json   # the scene-trained base, ~5 min
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--report", type=Path, default=REPO / "reports/adapt_budget.json")
    parser.add_argument("--base", type=Path, default=None, help="estimator fine-tuned (default: params adapt.base)")
    parser.add_argument("--setup", default=None, help="set-up of params adapt.setups (default: the one reports/figure5.json chose)")
    args = parser.parse_args()

    import keras

    from legato.config import load_params, section
    from legato.io.stamps import load_split
    from legato.stats import r2_table
    from legato.training.adapt import AdaptationBase, AdaptConfig, fit_network, nested_subsets, predict_network

    options = section(load_params(REPO / "params.yaml"), "adapt")
    config = AdaptConfig.from_params(options)
    chosen = args.setup or json.loads((REPO / "reports/figure5.json").read_text())["selection"]["chosen"]
    setup = config.setups[chosen]
    base_dir = args.base or REPO / options["base"]
    base = AdaptationBase(base_dir)
    test_x, test_labels, _ = load_split(REPO / "datasets/realistic/labelled/A")
    pool_x, pool_labels, _ = load_split(REPO / "datasets/realistic/labelled/B")
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
        r2 = r2_table(test_labels, predict_network(model, base.scaler, test_x, base.psf))
        runs.append(
            {
                "max_steps": int(steps),
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in fit.items()},
                "wall_seconds": round(time.perf_counter() - start, 1),
                "A_r2": {p: round(float(v), 4) for p, v in r2.items()},
            }
        )
        print(f"{steps} steps: {runs[-1]['A_r2']} ({runs[-1]['wall_seconds']} s)", flush=True)
    report = {
        "base": _relative(base_dir),
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
        + "--steps "
        + " ".join(map(str, args.steps))
        + (f" --report {_relative(args.report)}" if args.report != REPO / "reports/adapt_budget.json" else ""),
    }
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
