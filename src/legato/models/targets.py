"""The regression targets and their transforms between physical and network space.

The networks regress standardised ``[mag, ln re_arcsec, ln n, ellipticity]``
(logarithms make the relative errors of re and n uniform over their decades);
:class:`TargetScaler` holds the training-set means and standard deviations and
maps network outputs back to physical units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from legato.columns import LOG_COLUMNS, OUTPUT_COLUMNS, SERSIC_COLUMNS
from legato.errors import DataError


def to_network_space(labels, targets=SERSIC_COLUMNS) -> np.ndarray:
    """Physical labels (table or mapping of columns) to unstandardised network targets ``(N, len(targets))``."""
    columns = []
    for name in targets:
        if name not in getattr(labels, "colnames", labels):
            raise DataError(f"label column {name!r} is missing")
        values = np.asarray(labels[name], dtype=np.float64)
        columns.append(np.log(values) if name in LOG_COLUMNS else values)
    return np.column_stack(columns)


@dataclass(frozen=True)
class TargetScaler:
    """Standardisation of network targets.

    Attributes
    ----------
    targets : tuple of str
        Target names, in output order.
    mean, std : tuple of float
        Per-target mean and standard deviation in network space (before standardising).
    """

    targets: tuple
    mean: tuple
    std: tuple

    @classmethod
    def fit(cls, labels, targets=SERSIC_COLUMNS) -> TargetScaler:
        """Scaler with the statistics of ``labels`` (the training split)."""
        values = to_network_space(labels, targets)
        std = values.std(axis=0)
        std[std == 0] = 1.0
        return cls(tuple(targets), tuple(float(v) for v in values.mean(axis=0)), tuple(float(v) for v in std))

    def transform(self, labels) -> np.ndarray:
        """Standardised float32 targets ``(N, len(targets))``."""
        return ((to_network_space(labels, self.targets) - np.array(self.mean)) / np.array(self.std)).astype(np.float32)

    def inverse(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Physical values from standardised outputs (``re`` and ``n`` exponentiated)."""
        values = np.asarray(outputs, dtype=np.float64) * np.array(self.std) + np.array(self.mean)
        return {name: np.exp(values[:, i]) if name in LOG_COLUMNS else values[:, i] for i, name in enumerate(self.targets)}

    def to_json(self, path: str | Path) -> None:
        """Write the scaler as JSON."""
        Path(path).write_text(json.dumps({"targets": self.targets, "mean": self.mean, "std": self.std}, indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> TargetScaler:
        """Read a scaler written by :meth:`to_json`."""
        data = json.loads(Path(path).read_text())
        return cls(tuple(data["targets"]), tuple(data["mean"]), tuple(data["std"]))


def physical_columns(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Complete a set of predicted targets with ``q`` and ``ellipticity`` (q = 1 - ellipticity, clipped to (0, 1])."""
    out = dict(values)
    if "ellipticity" in out:
        out["q"] = np.clip(1.0 - out["ellipticity"], 1e-3, 1.0)
        out["ellipticity"] = 1.0 - out["q"]
    return {name: out[name] for name in OUTPUT_COLUMNS if name in out}
