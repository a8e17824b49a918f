"""``legato inspect``: model and residual of chosen catalogue rows, as GALFIT-style blocks and a PNG gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from legato.analysis.morphometry import border_sigma
from legato.columns import SERSIC_COLUMNS
from legato.errors import ConfigError, DataError
from legato.modelling.gallery import Inspection, gallery_figure, write_block
from legato.modelling.renderer import Geometry, ModelRenderer, stamp_geometry
from legato.modelling.statistics import fit_statistics


def read_estimates(path: str | Path) -> Table:
    """A catalogue of estimates (``legato predict`` output, a classical catalogue): FITS, ECSV or Parquet.

    Raises
    ------
    DataError
        If it cannot be read or lacks ``id`` or an estimate column.
    """
    try:
        table = Table.read(path, **({"mask_invalid": False} if str(path).lower().endswith((".fits", ".fit")) else {}))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read catalogue {path}: {exc}") from None
    missing = [c for c in ("id", *SERSIC_COLUMNS) if c not in table.colnames]
    if missing:
        raise DataError(f"catalogue {path} lacks the column(s) {', '.join(missing)}")
    return table


def row_geometry(row, stamp: np.ndarray) -> Geometry:
    """Position angle and centre of a row: its own (a classical fit's ``pa_deg``, ``x_pix``, ``y_pix``) or the moments'."""
    names = row.colnames
    if all(c in names for c in ("pa_deg", "x_pix", "y_pix")) and np.all(np.isfinite([row["pa_deg"], row["x_pix"], row["y_pix"]])):
        centre = stamp.shape[0] // 2
        return Geometry(float(row["pa_deg"]), float(row["x_pix"]) - centre, float(row["y_pix"]) - centre)
    return stamp_geometry(stamp)


def inspect_row(row, stamp: np.ndarray, renderer: ModelRenderer, exposure_time: float | None = None, label: str = "") -> Inspection:
    """The model, residual and goodness of fit of one catalogue row; no model when it has no estimate."""
    stamp = np.asarray(stamp, dtype=np.float64)
    estimate = [float(row[c]) for c in SERSIC_COLUMNS]
    flags = int(row["flags"]) if "flags" in row.colnames else 0
    values = dict(zip(SERSIC_COLUMNS, estimate))
    if not np.all(np.isfinite(estimate)):
        return Inspection(str(row["id"]), stamp, None, values, flags=flags, label=label)
    geometry = row_geometry(row, stamp)
    model = renderer.render(*estimate, geometry=geometry)
    sigma = float(row["sky_sigma"]) if "sky_sigma" in row.colnames and np.isfinite(row["sky_sigma"]) else border_sigma(stamp)
    values.update(fit_statistics(stamp, model, sigma, exposure_time).as_dict())
    return Inspection(str(row["id"]), stamp, model, values, geometry, flags, label)


def select_rows(table: Table, ids=None, worst: int = 0, random: int = 0, seed: int = 0, chi2=None) -> list[int]:
    """Row indices to inspect: given ids (in order), the ``worst`` by reduced chi², ``random`` others.

    Raises
    ------
    ConfigError
        If an id is not in the catalogue (all unknown ids named), or nothing is selected.
    """
    keys = [str(i) for i in table["id"]]
    index = {key: k for k, key in enumerate(keys)}
    chosen: list[int] = []
    if ids:
        unknown = [str(i) for i in ids if str(i) not in index]
        if unknown:
            raise ConfigError(f"id(s) not in the catalogue: {', '.join(unknown)}")
        chosen += [index[str(i)] for i in ids]
    if worst:
        order = np.argsort(-np.nan_to_num(np.asarray(chi2, dtype=float), nan=-np.inf), kind="stable")
        chosen += [int(k) for k in order if k not in chosen][:worst]
    if random:
        rest = np.array([k for k in range(len(table)) if k not in chosen])
        picked = np.random.default_rng(seed).choice(rest, size=min(random, len(rest)), replace=False) if len(rest) else []
        chosen += [int(k) for k in picked]
    if not chosen:
        raise ConfigError("nothing to inspect: give --id, --worst or --random")
    return chosen


def stamps_by_id(input_path: str | Path, wanted: set[str] | None = None) -> dict[str, np.ndarray]:
    """Stamps of a ``legato predict`` input (cube, folder, Parquet) by id (all of them when ``wanted`` is None)."""
    from legato.io.stamp_inputs import open_source

    found: dict[str, np.ndarray] = {}
    for chunk in open_source(Path(input_path)).chunks(1024):
        for source_id, stamp in zip(chunk.ids, chunk.stamps):
            key = str(source_id)
            if wanted is None or key in wanted:
                found[key] = np.asarray(stamp, dtype=np.float64)
    return found


def inspect_catalogue(
    catalogue_path: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    renderer: ModelRenderer,
    ids=None,
    worst: int = 0,
    random: int = 0,
    seed: int = 0,
    exposure_time: float | None = None,
) -> dict:
    """Write GALFIT-style blocks (``<id>.fits``) and ``gallery.png`` for chosen rows of a catalogue.

    Parameters
    ----------
    catalogue_path : str or Path
        Catalogue of estimates (``id``, ``mag``, ``re_arcsec``, ``n``, ``ellipticity``).
    input_path : str or Path
        The stamps the catalogue was made from (what ``legato predict`` read).
    out_dir : str or Path
        Folder for the blocks and the gallery.
    renderer : ModelRenderer
        PSF and conventions of the models.
    ids : sequence, optional
        Ids to inspect.
    worst, random : int
        Also the ``worst`` rows by reduced chi² (the catalogue's ``chi2_nu`` column, else
        computed for every row) and ``random`` other rows.
    seed : int
        Seed of the random selection.
    exposure_time : float, optional
        Effective exposure time (s) for the source's Poisson noise in the chi².

    Returns
    -------
    dict
        ``blocks`` (paths), ``gallery`` (path), ``ids``.
    """
    table = read_estimates(catalogue_path)
    chi2 = None
    if worst:
        if "chi2_nu" in table.colnames:
            chi2 = np.asarray(table["chi2_nu"], dtype=float)
        else:
            stamps = stamps_by_id(input_path)
            chi2 = np.array(
                [
                    inspect_row(row, stamps[str(row["id"])], renderer, exposure_time).values.get("chi2_nu", np.nan)
                    if str(row["id"]) in stamps
                    else np.nan
                    for row in table
                ]
            )
    rows = select_rows(table, ids, worst, random, seed, chi2)
    wanted = {str(table["id"][k]) for k in rows}
    stamps = stamps_by_id(input_path, wanted)
    missing = sorted(wanted - set(stamps))
    if missing:
        raise DataError(f"{input_path} has no stamp for id(s) {', '.join(missing)}")
    out_dir = Path(out_dir)
    inspections = [inspect_row(table[k], stamps[str(table["id"][k])], renderer, exposure_time) for k in rows]
    blocks = [write_block(out_dir / f"{_file_name(i.source_id)}.fits", i, renderer.pixel_scale, renderer.zeropoint) for i in inspections]
    gallery = gallery_figure(inspections, out_dir / "gallery.png", title=Path(catalogue_path).name)
    return {"blocks": [str(b) for b in blocks], "gallery": str(gallery), "ids": [i.source_id for i in inspections]}


def _file_name(source_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in source_id)
