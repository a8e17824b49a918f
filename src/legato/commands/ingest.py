"""Real data into labelled stamp sets: ``ingest galfit``, ``ingest mosaic``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.reports import write_json


def ingest_galfit(
    inputs: Annotated[list[Path], typer.Argument(help="GALFIT output blocks, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Stamp-set folder to write.")] = Path("datasets/real/uds"),
    pattern: Annotated[str, typer.Option(help="File pattern inside folders (one band per set).")] = "H.gf*.fits",
    size: Annotated[int, typer.Option(help="Stamp side, pixels (the network's input).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the noise that pads small blocks.")] = 0,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
):
    """GALFIT output blocks -> stamps centred on the target and its GALFIT labels; unusable files are reported and skipped."""
    from legato.ingest.real_sets import ingest_galfit_blocks

    paths = [p for item in inputs for p in (sorted(item.glob(pattern)) if item.is_dir() else [item])]
    summary = ingest_galfit_blocks(paths, out, size=size, seed=seed)
    for reason in summary["skipped"].values():
        typer.echo(f"skipped: {reason}", err=True)
    typer.echo(
        f"ingested {summary['ingested']} of {len(paths)} blocks ({summary['band']}) into {out}; skipped "
        f"{len(summary['skipped'])}; flagged {summary['flagged']}"
    )
    if report is not None:
        write_json(report, summary)


def ingest_mosaic_command(
    mosaic: Annotated[Path, typer.Argument(help="Mosaic FITS image with a celestial WCS (electrons/s).")],
    catalogue: Annotated[
        Path, typer.Argument(help="GALFIT catalogue in the van der Wel format (NUMBER RA DEC f mag dmag re dre n dn q dq pa dpa sn).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Stamp-set folder to write.")] = Path("datasets/real/mosaic"),
    size: Annotated[int, typer.Option(help="Stamp side, pixels.")] = 64,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
):
    """Cut the catalogue's sources out of a mosaic (RA/Dec through the WCS) with their GALFIT labels."""
    from legato.ingest.real_sets import ingest_mosaic

    summary = ingest_mosaic(mosaic, catalogue, out, size=size)
    typer.echo(
        f"ingested {summary['ingested']} sources into {out}; skipped {len(summary['skipped'])} (off the mosaic or bad pixels); "
        f"flagged {summary['flagged']}"
    )
    if report is not None:
        write_json(report, summary)
