"""``legato realism``: the realistic domain's noise against real CANDELS data (DVC stage ``realism``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def realism_command(
    params: Annotated[Path, typer.Option(help="Pipeline parameters (the realism section).")] = Path("params.yaml"),
    realistic: Annotated[Path, typer.Option(help="Raw realistic domain (A and B sub-folders).")] = Path("datasets/realistic/raw"),
    real_stamps: Annotated[Optional[Path], typer.Option(help="Ingested real stamps, measured like the realistic ones.")] = Path(
        "datasets/real/uds"
    ),
    report: Annotated[Path, typer.Option(help="The realism report (JSON).")] = Path("reports/realism.json"),
) -> None:
    """Per-pixel sigma, neighbour-pixel correlation and negative holes: realistic stamps against real UDS F160W blocks.

    Exits non-zero when the Great Expectations suite ``noise_realism`` fails (the realistic
    domain does not look like the real data), after writing the report.
    """
    from legato.config import load_params, section
    from legato.errors import ConfigError, DataError
    from legato.evaluation.realism import realism_report
    from legato.reports import write_json

    options = dict(section(load_params(params), "realism"))
    blocks_dir = Path(options.get("blocks", "data/candels_uds_galfit_blocks"))
    blocks = sorted(blocks_dir.glob(str(options.get("pattern", "H.gf*.fits"))))
    if not blocks:
        raise ConfigError(f"no real GALFIT block matches {blocks_dir}/{options.get('pattern', 'H.gf*.fits')}")
    summary = realism_report(
        blocks,
        realistic,
        real_stamps,
        suite_path=options.get("suite", "expectations/noise_realism.json"),
        tolerance=float(options.get("tolerance", 0.2)),
        max_stamps=int(options.get("max_stamps", 1000)),
        min_stamps=int(options.get("min_stamps", 100)),
    )
    write_json(report, summary)
    ratio = ", ".join(f"{k} {v:.2f}" for k, v in summary["ratio_realistic_to_real"].items())
    typer.echo(f"realistic / real UDS medians: {ratio}; suite noise_realism {'passed' if summary['suite']['success'] else 'FAILED'}")
    if not summary["suite"]["success"]:
        failed = [f"{e['type']}({e['column']}) observed {e['observed']}" for e in summary["suite"]["expectations"] if not e["success"]]
        raise DataError("the realistic domain's noise does not match the real data: " + "; ".join(failed))
