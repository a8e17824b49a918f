"""Model images of estimates: the PSF-convolved single Sérsic of a catalogue row, in the simulator's conventions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legato.conventions import PIXEL_SCALE_ARCSEC, Q_MIN, ZEROPOINT_AB

# GalSim's Sérsic index range
SERSIC_N_RANGE = (0.3, 6.2)

# GalSim builds a profile table for every new Sérsic index; rendering snaps n to the
# simulator's grid (params simulate.n_grid_dex) so a catalogue reuses a few hundred tables.
N_GRID_DEX = 0.005


@dataclass(frozen=True)
class Geometry:
    """Position angle (degrees, GALFIT convention) and centre offset from the stamp centre (pixels)."""

    pa_deg: float = 0.0
    x_offset_pix: float = 0.0
    y_offset_pix: float = 0.0


def stamp_geometry(stamp: np.ndarray) -> Geometry:
    """Position angle and centre of a stamp's galaxy from its adaptive second moments (HSM).

    The networks estimate neither; the moments give both to a fraction of a pixel and a
    few degrees for the galaxies a residual can say anything about. A stamp whose moments
    do not converge (blank, very faint) gets the stamp centre and PA 0.
    """
    import galsim

    from legato.conventions import galsim_beta_to_galfit_pa_deg

    size = stamp.shape[0]
    try:
        moments = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(stamp, dtype=np.float64)), strict=True)
    except galsim.GalSimError:
        return Geometry()
    centroid = moments.moments_centroid  # 1-based pixel centres
    x, y = centroid.x - 1.0 - size // 2, centroid.y - 1.0 - size // 2
    if not (np.isfinite(x) and np.isfinite(y)) or np.hypot(x, y) > 3.0:
        x, y = 0.0, 0.0
    return Geometry(float(galsim_beta_to_galfit_pa_deg(moments.observed_shape.beta.deg)), float(x), float(y))


@dataclass(frozen=True)
class ModelRenderer:
    """Renders the model image of an estimate with the simulator's PSF and conventions.

    Attributes
    ----------
    psf : galsim.GSObject
        PSF without the output-pixel response (``PSFImage.galsim_profile()``).
    size : int
        Stamp side, pixels.
    pixel_scale : float
        Arcsec / pixel.
    zeropoint : float
        AB magnitude of 1 electron/s.
    """

    psf: object
    size: int = 64
    pixel_scale: float = PIXEL_SCALE_ARCSEC
    zeropoint: float = ZEROPOINT_AB["F160W"]

    def render(self, mag: float, re_arcsec: float, n: float, ellipticity: float, geometry: Geometry = Geometry()) -> np.ndarray:
        """Noiseless model image (electrons/s) of one estimate; n snapped to the simulator's grid.

        Raises
        ------
        ValueError
            If a parameter is not finite or not positive (a row without an estimate).
        """
        from legato.simulation.render import render_sersic_stamp

        values = np.array([mag, re_arcsec, n, ellipticity], dtype=float)
        if not np.all(np.isfinite(values)) or re_arcsec <= 0 or n <= 0:
            raise ValueError(f"no model for the estimate {values.tolist()}")
        snapped = 10.0 ** (np.round(np.log10(n) / N_GRID_DEX) * N_GRID_DEX)
        q = float(np.clip(1.0 - ellipticity, Q_MIN, 1.0))
        return render_sersic_stamp(
            float(mag),
            float(re_arcsec),
            float(np.clip(snapped, *SERSIC_N_RANGE)),
            q,
            geometry.pa_deg,
            geometry.x_offset_pix,
            geometry.y_offset_pix,
            psf=self.psf,
            size=self.size,
            pixel_scale=self.pixel_scale,
            zeropoint=self.zeropoint,
        )


def renderer_from_psf_file(psf_path, size: int = 64, zeropoint: float = ZEROPOINT_AB["F160W"]) -> ModelRenderer:
    """The renderer with the PSF image at ``psf_path`` (0.06"/px) and the stamps' AB ``zeropoint`` (default F160W's)."""
    from legato.simulation.psf import read_psf_image

    return ModelRenderer(read_psf_image(psf_path).galsim_profile(), size=size, zeropoint=float(zeropoint))
