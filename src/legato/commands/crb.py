"""``legato crb``: the Cramér-Rao bound of every galaxy of a simulated stamp set (DVC stage ``crb``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def crb_command(
    params: Annotated[Path, typer.Option(help="Pipeline parameters (the crb section).")] = Path("params.yaml"),
    stamps: Annotated[Path, typer.Option(help="Simulated stamp set (true parameters and noise model in it).")] = Path(
        "datasets/simulated/test"
    ),
    psf: Annotated[Optional[Path], typer.Option(help="PSF image the set was rendered with (default: params simulate.psf).")] = None,
    out: Annotated[Path, typer.Option(help="Per-galaxy bound table (FITS).")] = Path("datasets/crb/test.fits"),
    workers: Annotated[Optional[int], typer.Option(min=1, help="Worker processes (default: params).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the stage summary (JSON) here.")] = None,
) -> None:
    """Cramér-Rao bounds on mag, re, n and ellipticity of every galaxy, at its true parameters.

    The bound of each galaxy is the diagonal of the inverse Fisher matrix of its stamp
    (PSF-convolved Sérsic model, sky plus source Poisson noise; position angle and
    centre as nuisance parameters). Galaxies whose matrix is singular or ill-conditioned,
    or whose parameters sit at a model limit, get NaN bounds and a flag.
    """
    from legato.config import load_params, section
    from legato.errors import ConfigError
    from legato.evaluation.crb_catalogue import crb_catalogue
    from legato.reports import write_json

    loaded = load_params(params)
    options = dict(section(loaded, "crb")) if "crb" in loaded else {}
    psf = psf or Path(loaded.get("simulate", {}).get("psf", "data/psf/wfc3ir_f160w_psf.fits"))
    if not stamps.is_dir():
        raise ConfigError(f"stamp set {stamps} does not exist")
    summary = crb_catalogue(
        stamps,
        psf,
        out,
        workers=int(workers or options.get("workers", 2)),
        convergence_galaxies=int(options.get("convergence_galaxies", 200)),
    )
    typer.echo(
        f"Cramér-Rao bounds of {summary['galaxies']} galaxies in {out} ({summary['seconds']} s); "
        f"flagged: {summary['galaxies'] - summary['valid']}"
    )
    if report is not None:
        write_json(report, summary)
