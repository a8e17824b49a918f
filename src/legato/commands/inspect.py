"""``legato inspect``: see chosen rows of a catalogue as stamp, model and residual."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def inspect_command(
    catalogue: Annotated[Path, typer.Argument(help="Catalogue of estimates (legato predict output, a classical catalogue).")],
    stamps: Annotated[
        Path, typer.Option(help="The stamps the catalogue was made from (cube, folder or Parquet, as given to legato predict).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the blocks (<id>.fits) and gallery.png.")] = Path("inspect"),
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="Row id to inspect (repeatable).")] = None,
    worst: Annotated[int, typer.Option(min=0, help="Also the N rows with the largest reduced chi².")] = 0,
    random: Annotated[int, typer.Option(min=0, help="Also N random rows.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of --random.")] = 0,
    psf: Annotated[Path, typer.Option(help="PSF image of the models.")] = Path("data/psf/wfc3ir_f160w_psf.fits"),
    exposure_time: Annotated[
        Optional[float], typer.Option(min=0.0, help="Effective exposure time (s) for the chi² (default: sky noise only).")
    ] = None,
) -> None:
    """Write GALFIT-style blocks (INPUT, MODEL, RESIDUAL; parameters in the MODEL header) and a PNG gallery."""
    from legato.modelling.inspect import inspect_catalogue
    from legato.modelling.renderer import renderer_from_psf_file

    shown = inspect_catalogue(
        catalogue,
        stamps,
        out,
        renderer_from_psf_file(psf),
        ids=ids,
        worst=worst,
        random=random,
        seed=seed,
        exposure_time=exposure_time or None,
    )
    typer.echo(f"{len(shown['blocks'])} blocks and {shown['gallery']} written to {out}")
