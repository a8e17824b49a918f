"""The PSF a stamp was observed with, as a PSF-conditioned estimator reads it.

A PSF-conditioned estimator (issue 24) takes, beside the stamp, two numbers
of its PSF: the FWHM and the half-light radius (:func:`psf_summary`,
measured the same way on a model PSF and on a user's PSF image). Its
magnitudes are learnt on the F160W zeropoint (the pixels hold electrons/s and
do not tell a band's zeropoint), so the band's own zeropoint is applied
outside the network. The estimator's manifest lists the bands it was trained
on, each with its nominal PSF and the PSF range it saw (``psf_input``); a
:class:`PsfCondition` is resolved against it from a band name or a PSF file,
and a PSF outside every band's range is flagged ``INPUT_OUT_OF_RANGE``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from legato.conventions import BAND, ZEROPOINT_AB
from legato.errors import ConfigError

#: the zeropoint the network's magnitudes are learnt on
REFERENCE_ZEROPOINT = ZEROPOINT_AB[BAND]
#: a PSF within this factor of a training band's PSF range counts as inside it (the summaries' own precision)
RANGE_MARGIN = 1.01


@dataclass(frozen=True)
class PsfCondition:
    """The PSF and photometric calibration one prediction call runs with.

    Attributes
    ----------
    band : str
        Band name (``"custom"`` for a PSF file of no named band).
    psf_id : str
        Identifier of the PSF (model id or file name).
    fwhm_arcsec, r50_arcsec : float or numpy.ndarray
        FWHM and half-light radius of the PSF, arcsec (:func:`legato.simulation.psf.psf_summary`);
        arrays ``(N,)`` give each of N stamps its own PSF (simulated test sets drawn with jittered PSFs).
    zeropoint : float
        AB zeropoint of the stamps (magnitude of 1 electron/s).
    """

    band: str
    psf_id: str
    fwhm_arcsec: float | np.ndarray
    r50_arcsec: float | np.ndarray
    zeropoint: float

    @property
    def magnitude_offset(self) -> float:
        """What turns a magnitude on the reference (F160W) zeropoint into this band's AB magnitude."""
        return float(self.zeropoint - REFERENCE_ZEROPOINT)

    def features(self, count: int) -> np.ndarray:
        """The network's second input for ``count`` stamps, ``(count, 2)`` float32."""
        from legato.models.noise_aware import psf_features

        fwhm, r50 = (np.broadcast_to(np.asarray(v, dtype=float), (count,)) for v in (self.fwhm_arcsec, self.r50_arcsec))
        return psf_features(fwhm, r50)

    def as_dict(self) -> dict:
        """Plain values (catalogue metadata, served responses)."""
        return asdict(self)

    def meta(self) -> dict:
        """The catalogue metadata of a prediction run with this condition."""
        return {
            "band": self.band,
            "psf_id": self.psf_id,
            "psf_fwhm_arcsec": self.fwhm_arcsec,
            "psf_r50_arcsec": self.r50_arcsec,
            "zeropoint": self.zeropoint,
        }


def training_bands(labels) -> dict:
    """The ``psf_input`` bands of a manifest from a multi-band training table.

    Parameters
    ----------
    labels : astropy.table.Table
        Rows with ``band``, ``psf_dilation``, ``psf_fwhm_arcsec``, ``psf_r50_arcsec`` and ``zeropoint``.

    Returns
    -------
    dict
        ``{band: {"fwhm_arcsec", "r50_arcsec", "zeropoint", "fwhm_range", "r50_range"}}``: the band's
        nominal PSF (dilation 1) and the range of PSFs it was trained on.
    """
    bands = np.asarray(labels["band"]).astype(str)
    dilation = np.asarray(labels["psf_dilation"], dtype=float)
    fwhm, r50 = np.asarray(labels["psf_fwhm_arcsec"], dtype=float), np.asarray(labels["psf_r50_arcsec"], dtype=float)
    zeropoints = np.asarray(labels["zeropoint"], dtype=float)
    result = {}
    for band in sorted(set(bands)):
        rows = bands == band
        result[band] = {
            "fwhm_arcsec": float(np.median(fwhm[rows] / dilation[rows])),
            "r50_arcsec": float(np.median(r50[rows] / dilation[rows])),
            "zeropoint": float(zeropoints[rows][0]),
            "fwhm_range": [float(fwhm[rows].min()), float(fwhm[rows].max())],
            "r50_range": [float(r50[rows].min()), float(r50[rows].max())],
        }
    return result


def resolve_psf(
    bands: dict | None,
    band: str | None = None,
    psf_file: str | Path | None = None,
    zeropoint: float | None = None,
    summary: tuple | None = None,
) -> PsfCondition | None:
    """The PSF condition of a prediction call (None for an estimator without a PSF input, on F160W stamps).

    An estimator without a PSF input knows the F160W PSF it was trained on only.

    Parameters
    ----------
    bands : dict or None
        The estimator's training bands (:func:`training_bands`; its manifest's ``psf_input.bands``),
        None for an estimator without a PSF input.
    band : str, optional
        A band the estimator knows (default F160W); with ``psf_file`` or ``summary``, the band they are for (its zeropoint).
    psf_file : str or Path, optional
        A PSF image (FITS, 0.06"/pixel) to use instead of the band's model PSF.
    zeropoint : float, optional
        AB zeropoint of the stamps (default: the band's).
    summary : tuple of float, optional
        ``(FWHM, r50)`` of the PSF in arcsec (:func:`legato.simulation.psf.psf_summary`), instead of a file.

    Raises
    ------
    ConfigError
        On a band the estimator was not trained on, or a PSF with neither a known band nor a zeropoint.
    DataError
        On an unreadable PSF file.
    """
    if bands is None:
        if psf_file is not None or summary is not None or band not in (None, BAND) or zeropoint is not None:
            raise ConfigError(
                f"this estimator takes no PSF input: it measures {BAND} stamps with the {BAND} model PSF only "
                "(use the PSF-conditioned estimator, models/scenes, for other bands or PSFs)"
            )
        return None
    if psf_file is None and summary is None:
        name = band or BAND
        if name not in bands:
            known = ", ".join(sorted(bands))
            raise ConfigError(f"this estimator was trained on {known} only, not {name!r}: give the PSF (a file) or use one of them")
        entry = bands[name]
        return PsfCondition(
            band=name,
            psf_id=f"model {name}",
            fwhm_arcsec=float(entry["fwhm_arcsec"]),
            r50_arcsec=float(entry["r50_arcsec"]),
            zeropoint=float(entry["zeropoint"] if zeropoint is None else zeropoint),
        )
    psf_id = "given FWHM and r50"
    if psf_file is not None:
        from legato.simulation.psf import psf_summary, read_psf_image

        image = read_psf_image(psf_file)
        summary, psf_id = psf_summary(image), image.psf_id
    fwhm, r50 = (float(v) for v in summary)
    if not (np.isfinite(fwhm) and np.isfinite(r50) and fwhm > 0 and r50 > 0):
        raise ConfigError(f"the PSF's FWHM and r50 must be positive numbers (arcsec), got {fwhm} and {r50}")
    if zeropoint is None:
        if band is None:
            raise ConfigError(f"a PSF needs its band (one of {', '.join(sorted(ZEROPOINT_AB))}) or the stamps' zeropoint")
        from legato.conventions import zeropoint as band_zeropoint

        zeropoint = band_zeropoint(band)
    return PsfCondition(band=band or "custom", psf_id=psf_id, fwhm_arcsec=fwhm, r50_arcsec=r50, zeropoint=float(zeropoint))


def psf_in_range(bands: dict, condition: PsfCondition, margin: float = RANGE_MARGIN) -> np.ndarray:
    """Whether the PSF lies inside the PSF range of at least one training band (both its FWHM and its r50): a boolean
    (an array for per-stamp PSFs)."""
    fwhm, r50 = np.asarray(condition.fwhm_arcsec, dtype=float), np.asarray(condition.r50_arcsec, dtype=float)
    inside = np.zeros(np.broadcast(fwhm, r50).shape, dtype=bool)
    for entry in bands.values():
        inside = inside | (
            (entry["fwhm_range"][0] / margin <= fwhm)
            & (fwhm <= entry["fwhm_range"][1] * margin)
            & (entry["r50_range"][0] / margin <= r50)
            & (r50 <= entry["r50_range"][1] * margin)
        )
    return inside
