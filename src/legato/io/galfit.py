"""GALFIT output image blocks: the observed stamp and the fitted parameters of its target.

A block (``galfit -o`` output) has HDU1 the observed image with its original
header (WCS), HDU2 the model with the fit in its header and HDU3 the residual.
HDU2's keywords give each component: ``COMP_k`` (``sersic``, ``sky``, ...) and
``k_XC``, ``k_YC`` (1-based pixels), ``k_MAG``, ``k_RE`` (pixels, semi-major),
``k_N``, ``k_AR`` (b/a), ``k_PA`` (degrees, counter-clockwise from +y), each as
``"value +/- error"``. A value in ``[...]`` was held fixed; ``*value*`` marks a
parameter that hit a constraint or made the fit unstable. ``ERROR`` (e.g.
``'Convergence'``) flags a fit that stopped on GALFIT's iteration limit.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import FITSFixedWarning

from legato.errors import DataError

# GALFIT flags of a target's parameters, as bits
GALFIT_FIXED = 1  # a parameter was held fixed ([...])
GALFIT_AT_LIMIT = 2  # a parameter hit a constraint (*...*)
GALFIT_NOT_CONVERGED = 4  # ERROR keyword set (e.g. iteration limit)
GALFIT_FLAG_NAMES = {GALFIT_FIXED: "fixed", GALFIT_AT_LIMIT: "at_limit", GALFIT_NOT_CONVERGED: "not_converged"}
SERSIC_KEYS = ("XC", "YC", "MAG", "RE", "N", "AR", "PA")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class GalfitValue:
    """One GALFIT parameter: value, error and its markers."""

    value: float
    error: float
    fixed: bool = False
    at_limit: bool = False


def parse_galfit_value(text: str) -> GalfitValue:
    """Parse ``"25.17 +/- 0.03"``, ``"[84.36]"`` or ``"*0.3000* +/- *4192.57*"``.

    Raises
    ------
    DataError
        If no number can be read.
    """
    text = str(text).strip()
    fixed = text.startswith("[")
    at_limit = "*" in text
    numbers = re.findall(_NUMBER, text.replace("*", " ").replace("[", " ").replace("]", " "))
    if not numbers:
        raise DataError(f"cannot read a GALFIT value from {text!r}")
    error = float(numbers[1]) if "+/-" in text and len(numbers) > 1 else float("nan")
    return GalfitValue(float(numbers[0]), error, fixed, at_limit)


@dataclass
class GalfitBlock:
    """An observed GALFIT stamp with its fitted components.

    Attributes
    ----------
    image : numpy.ndarray
        Observed stamp (HDU1), float64, in the block's units (electrons/s for CANDELS).
    residual : numpy.ndarray or None
        GALFIT residual (HDU3), when present.
    header : astropy.io.fits.Header
        HDU1 header (WCS).
    zeropoint : float
        ``MAGZPT`` of the fit.
    components : list of dict
        Per component: ``type`` and parsed ``GalfitValue`` per keyword.
    error : str
        The fit's ``ERROR`` keyword ('' when absent).
    """

    image: np.ndarray
    residual: np.ndarray | None
    header: fits.Header
    zeropoint: float
    components: list = field(default_factory=list)
    error: str = ""

    def sky(self) -> float:
        """The fitted flat sky (0 when the fit has no sky component)."""
        for component in self.components:
            if component["type"] == "sky" and "SKY" in component:
                return component["SKY"].value
        return 0.0

    def target(self) -> dict:
        """The Sérsic component nearest the stamp centre.

        Raises
        ------
        DataError
            If the block has no complete Sérsic component.
        """
        ny, nx = self.image.shape
        centre = np.array([(nx + 1) / 2.0, (ny + 1) / 2.0])  # 1-based, as GALFIT
        sersics = [c for c in self.components if c["type"] == "sersic" and all(k in c for k in SERSIC_KEYS)]
        if not sersics:
            raise DataError("no complete Sérsic component (COMP_k = sersic with XC YC MAG RE N AR PA)")
        distance = [np.hypot(c["XC"].value - centre[0], c["YC"].value - centre[1]) for c in sersics]
        return sersics[int(np.argmin(distance))]


def read_galfit_block(path: str | Path) -> GalfitBlock:
    """Read a GALFIT output block.

    Raises
    ------
    DataError
        On a missing, truncated or corrupt file, missing HDUs or keywords, or NaN/inf pixels.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # astropy only warns about a truncated file
            warnings.simplefilter("ignore", FITSFixedWarning)
            with fits.open(path, memmap=False) as hdul:
                if len(hdul) < 3:
                    raise DataError(f"{path.name}: not a GALFIT block (expected image, model and residual HDUs, found {len(hdul)})")
                image = np.asarray(hdul[1].data, dtype=np.float64)
                model_header = hdul[2].header.copy()
                header = hdul[1].header.copy()
                residual = np.asarray(hdul[3].data, dtype=np.float64) if len(hdul) > 3 and hdul[3].data is not None else None
    except FileNotFoundError:
        raise DataError(f"{path.name}: file not found") from None
    except DataError:
        raise
    except (OSError, ValueError, TypeError, IndexError, AstropyUserWarning) as exc:
        raise DataError(f"{path.name}: unreadable or truncated FITS ({exc})") from None
    if image.ndim != 2 or image.size == 0:
        raise DataError(f"{path.name}: HDU1 is not a 2-D image (shape {image.shape})")
    bad = int(np.sum(~np.isfinite(image)))
    if bad:
        raise DataError(f"{path.name}: {bad} NaN/inf pixels in the observed image")
    if "MAGZPT" not in model_header:
        raise DataError(f"{path.name}: missing keyword MAGZPT in the model header")
    components = []
    k = 1
    while f"COMP_{k}" in model_header:
        component = {"type": str(model_header[f"COMP_{k}"]).strip().lower()}
        for key, value in model_header.items():
            if key.startswith(f"{k}_"):
                component[key[len(f"{k}_") :]] = parse_galfit_value(value)
        components.append(component)
        k += 1
    if not components:
        raise DataError(f"{path.name}: missing keywords COMP_k (no GALFIT components in HDU2)")
    return GalfitBlock(image, residual, header, float(model_header["MAGZPT"]), components, str(model_header.get("ERROR", "")).strip())


def target_flags(block: GalfitBlock, target: dict) -> int:
    """GALFIT flag bits of the target: fixed, at a limit, fit not converged."""
    flags = 0
    if any(target[k].fixed for k in SERSIC_KEYS[2:]):
        flags |= GALFIT_FIXED
    if any(target[k].at_limit for k in SERSIC_KEYS):
        flags |= GALFIT_AT_LIMIT
    if block.error:
        flags |= GALFIT_NOT_CONVERGED
    return flags
