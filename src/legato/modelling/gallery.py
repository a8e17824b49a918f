"""GALFIT-style blocks (image, model, residual) and PNG galleries of estimates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from legato.analysis.morphometry import border_sigma
from legato.modelling.renderer import Geometry

# FITS keywords of an estimate in a block's MODEL header: (column, keyword, comment)
HEADER_KEYWORDS = (
    ("mag", "MAG", "[mag] total AB magnitude"),
    ("re_arcsec", "RE_ARCS", "[arcsec] half-light radius"),
    ("n", "N", "Sersic index"),
    ("ellipticity", "ELLIP", "1 - b/a"),
    ("chi2_nu", "CHI2NU", "reduced chi2, fit region"),
    ("residual_flux_fraction", "RFF", "residual flux fraction"),
    ("residual_asymmetry", "RESASYM", "residual asymmetry"),
)


@dataclass
class Inspection:
    """One galaxy seen through an estimate: its stamp, model, residual and numbers.

    Attributes
    ----------
    source_id : str
        The catalogue row's id.
    stamp : numpy.ndarray
        The stamp, electrons/s.
    model : numpy.ndarray or None
        Model of the estimate (None for a row without an estimate).
    values : dict
        The estimate and goodness-of-fit columns (``mag``, ``re_arcsec``, ``n``,
        ``ellipticity``, ``chi2_nu``, ...).
    geometry : Geometry
        Position angle and centre the model was drawn with.
    flags : int
        The row's flags.
    label : str
        Extra title text (e.g. the method, or the true values).
    """

    source_id: str
    stamp: np.ndarray
    model: np.ndarray | None
    values: dict = field(default_factory=dict)
    geometry: Geometry = Geometry()
    flags: int = 0
    label: str = ""

    @property
    def residual(self) -> np.ndarray:
        """Stamp minus model (NaN without a model)."""
        return self.stamp - self.model if self.model is not None else np.full_like(self.stamp, np.nan)

    def title(self) -> str:
        """One-line description for a gallery panel."""
        if self.model is None:
            return f"{self.source_id}: no estimate (flags {self.flags}) {self.label}".strip()
        v = self.values
        text = f'{self.source_id}: H {v["mag"]:.2f}  re {v["re_arcsec"]:.2f}"  n {v["n"]:.2f}  e {v["ellipticity"]:.2f}'
        if np.isfinite(v.get("chi2_nu", np.nan)):
            text += f"  chi2 {v['chi2_nu']:.2f}"
        return text + (f"  flags {self.flags}" if self.flags else "") + (f"\n{self.label}" if self.label else "")


def write_block(path: str | Path, inspection: Inspection, pixel_scale: float, zeropoint: float) -> Path:
    """Write a GALFIT-style block: empty primary, then INPUT, MODEL and RESIDUAL image HDUs.

    The MODEL header carries the estimate (``MAG``, ``RE_ARCS``, ``N``, ``ELLIP``, ``PA``,
    ``XOFF``, ``YOFF``), the goodness of fit (``CHI2NU``, ``RFF``, ``RESASYM``) and
    ``FLAGS``; a row without an estimate gets NaN model and residual and ``NOMODEL = T``.
    No WCS: pixel coordinates only, as the stamps have.
    """
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = (str(inspection.source_id), "catalogue id")
    primary.header["ORIGIN"] = "legato inspect"
    hdus = [primary]
    for name, image in (("INPUT", inspection.stamp), ("MODEL", inspection.model), ("RESIDUAL", inspection.residual)):
        data = np.full_like(inspection.stamp, np.nan) if image is None else image
        hdu = fits.ImageHDU(np.asarray(data, dtype=np.float32), name=name)
        hdu.header["BUNIT"] = "ELECTRONS/S"
        hdu.header["PIXSCALE"] = (pixel_scale, "arcsec / pixel")
        hdu.header["MAGZPT"] = (zeropoint, "AB magnitude of 1 electron/s")
        hdus.append(hdu)
    header = hdus[2].header
    header["NOMODEL"] = (inspection.model is None, "no estimate, no model")
    for column, keyword, comment in HEADER_KEYWORDS:
        value = inspection.values.get(column)
        if value is not None and np.isfinite(value):
            header[keyword] = (float(value), comment)
    header["PA"] = (inspection.geometry.pa_deg, "[deg] position angle (GALFIT)")
    header["XOFF"] = (inspection.geometry.x_offset_pix, "[pix] x offset from stamp centre")
    header["YOFF"] = (inspection.geometry.y_offset_pix, "[pix] y offset from stamp centre")
    header["FLAGS"] = (int(inspection.flags), "legato flag bits")
    if inspection.label:
        header["LABEL"] = inspection.label[:68]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fits.HDUList(hdus).writeto(partial, overwrite=True)
    partial.replace(path)
    return path


def gallery_figure(inspections: list[Inspection], path: str | Path, title: str = "") -> Path:
    """PNG gallery: one row per galaxy, stamp | model | residual, asinh stretch, titles with the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize

    from legato.figures import save_figure

    rows = max(len(inspections), 1)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
    for number, (axis_row, inspection) in enumerate(zip(axes, inspections)):
        stamp = inspection.stamp
        low, peak = (float(np.nanpercentile(stamp, 1)), float(np.nanmax(stamp))) if np.any(np.isfinite(stamp)) else (0.0, 1.0)
        norm = ImageNormalize(vmin=low, vmax=max(peak, low + 1e-12), stretch=AsinhStretch(0.05))
        residual = inspection.residual
        # linear and symmetric about zero, so sign and size read directly; +-5 sky sigma unless the residual is larger
        scale = 5.0 * border_sigma(stamp) if np.all(np.isfinite(stamp)) else 0.0
        limit = max(float(np.nanpercentile(np.abs(residual), 99.5)) if np.any(np.isfinite(residual)) else 0.0, scale, 1e-12)
        panels = (
            ("stamp", stamp, norm, "gray"),
            ("model", inspection.model, norm, "gray"),
            ("residual", residual, ImageNormalize(vmin=-limit, vmax=limit), "RdBu_r"),
        )
        for axis, (name, image, image_norm, cmap) in zip(axis_row, panels):
            if image is not None:
                axis.imshow(image, origin="lower", norm=image_norm, cmap=cmap)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlabel(name, fontsize=8)
        heading = f"{title}\n" if title and number == 0 else ""
        axis_row[0].set_title(heading + inspection.title(), fontsize=7, loc="left")
    return save_figure(figure, path)
