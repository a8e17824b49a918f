"""``legato score-realistic``: realistic test A against the labels and the simulated truth (DVC stage ``score_realistic``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def score_realistic_command(
    estimator: Annotated[list[str], typer.Option(help="name=estimator folder; repeat for each estimator scored.")],
    test: Annotated[Path, typer.Option(help="The labelled realistic test A (legato assemble-realistic).")] = Path(
        "datasets/realistic/labelled/A"
    ),
    report: Annotated[Path, typer.Option(help="The report (JSON).")] = Path("reports/realistic_truth.json"),
) -> None:
    """Score estimators on test A against the classical labels and, for the Sérsic galaxies, the simulated truth.

    Split into isolated stamps and stamps with neighbours, with the coverage of the
    68% / 95% intervals; the classical labels are scored against the same truth.
    """
    from legato.evaluation.truth import score_test_a
    from legato.io.stamps import read_stamp_set
    from legato.models.estimator import LoadedEstimator
    from legato.options import parse_mapping
    from legato.reports import write_json

    folders = parse_mapping(estimator, "--estimator")
    stamps, labels, _ = read_stamp_set(test)
    estimates = {name: LoadedEstimator(folder).predict(stamps) for name, folder in folders.items()}
    summary = score_test_a(labels, estimates) | {"test": str(test), "estimators": {k: str(v) for k, v in folders.items()}}
    write_json(report, summary)
    for name in folders:
        truth = summary["against_truth"][name]["sersic_with_neighbours_h23"]["r2"]
        typer.echo(f"{name}: Sérsic with neighbours, H < 23, R² against the truth " + " / ".join(f"{v}" for v in truth.values()))
