"""An estimator folder loaded: its networks and scalers, predicting physical Sérsic parameters.

A folder (``estimator.json`` manifest, Keras networks, target scalers) holds one
multi-output network or one network per parameter. :class:`LoadedEstimator`
takes raw stamps ``(N, H, W)`` in electrons/s and returns ``mag`` (AB),
``re_arcsec`` (semi-major, arcsec), ``n``, ``q``, ``ellipticity`` and, for the
production estimator, calibrated uncertainties and its input checks. The MLflow
model around it is :mod:`legato.serving.pyfunc`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from legato.columns import ERROR_SUFFIXES, LOG_COLUMNS, OUTPUT_COLUMNS, SERSIC_COLUMNS
from legato.conventions import BAND, ZEROPOINT_AB
from legato.errors import ConfigError, DataError
from legato.flags import BLENDED, FAILED_VALIDATION, INPUT_OUT_OF_RANGE, NO_SOURCE
from legato.models.deblending import DEBLENDED_KIND, deblended_inputs, widened
from legato.models.input_range import InputRange
from legato.models.refinement import REFINED_KIND, RefinementStage
from legato.models.routing import ROUTED_KIND, ROUTES, disagreement, merge_routes, routed_rows
from legato.models.targets import TargetScaler, physical_columns
from legato.symmetry import SYMMETRY_COUNT, average_estimates, dihedral

MANIFEST = "estimator.json"
MAX_BATCH = 4096  # most stamps one request may hold
NON_NUMERIC = {"b": "booleans", "U": "strings", "S": "strings", "O": "non-numbers (null, objects or mixed types)"}


def validate_stamps(stamps, stamp_size: int, max_batch: int = MAX_BATCH, allow_nonfinite: bool = False) -> np.ndarray:
    """Check a batch of raw stamps and return it as float32 ``(N, H, W)``.

    A 2-D array is one stamp. Booleans, strings and objects are not pixels.
    With ``allow_nonfinite`` NaN/inf pixels pass (the caller flags their rows).

    Raises
    ------
    DataError
        On a wrong shape, a non-numeric dtype, NaN/inf pixels, an empty or oversized batch.
    """
    array = np.asarray(stamps)
    if array.dtype.kind not in "fiu":
        kind = NON_NUMERIC.get(array.dtype.kind, f"dtype {array.dtype}")
        raise DataError(f"pixels must be numbers, got {kind}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (stamp_size, stamp_size):
        raise DataError(f"stamps must have shape (N, {stamp_size}, {stamp_size}), got {array.shape}")
    if array.shape[0] == 0:
        raise DataError("empty batch: send at least one stamp")
    if array.shape[0] > max_batch:
        raise DataError(f"batch of {array.shape[0]} stamps exceeds the limit of {max_batch}")
    with np.errstate(over="ignore"):  # beyond float32: inf, flagged like any non-finite pixel
        array = array.astype(np.float32, copy=False)
    if not allow_nonfinite:
        bad = ~np.isfinite(array).all(axis=(1, 2))
        if bad.any():
            raise DataError(f"stamps {np.flatnonzero(bad)[:10].tolist()} contain NaN or inf pixels")
    return array


def stamp_cube(model_input, stamp_size: int):
    """Stamps as an array: a DataFrame whose first column holds stamps (2-D or flattened), or
    an array ``(N, H, W)``, ``(H, W)`` or ``(N, H * W)`` (flattened row-major, e.g. a Spark
    ``array<float>`` column). Shape and dtype are checked by :func:`validate_stamps`."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0 or len(model_input) == 0:
            raise DataError("empty batch: send at least one stamp")
        try:
            model_input = np.stack([np.asarray(v) for v in model_input.iloc[:, 0]])
        except ValueError as exc:
            raise DataError(f"stamps of different sizes in one batch ({exc})") from None
    array = np.asarray(model_input)
    if array.ndim == 2 and array.shape[1] == stamp_size * stamp_size:
        array = array.reshape(-1, stamp_size, stamp_size)
    return array


def read_manifest(folder: str | Path) -> dict:
    """An estimator folder's manifest (``estimator.json``), without loading its networks."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"no estimator in {folder} (missing {MANIFEST})")
    return json.loads(path.read_text())


def manifest_psf_bands(manifest: dict) -> dict | None:
    """The training bands of a PSF-conditioned estimator's manifest (None: no PSF input)."""
    return (manifest.get("psf_input") or {}).get("bands")


def checked_symmetries(symmetries) -> int:
    """``symmetries`` as an int when it is one of 1-8 (:data:`legato.symmetry.SYMMETRY_COUNT`).

    Raises
    ------
    ConfigError
        Otherwise.
    """
    if isinstance(symmetries, bool) or not (isinstance(symmetries, (int, np.integer)) and 1 <= symmetries <= SYMMETRY_COUNT):
        raise ConfigError(f"symmetries must be an integer from 1 to {SYMMETRY_COUNT}, got {symmetries!r}")
    return int(symmetries)


class LoadedEstimator:
    """Networks and scalers loaded from an estimator folder, predicting in physical units."""

    def __init__(self, folder: str | Path, symmetries: int = 1):
        """Load the estimator in ``folder``.

        Parameters
        ----------
        folder : str or Path
            Estimator folder (``estimator.json`` and its networks, or a wrapper kind's members).
        symmetries : int
            Flips/rotations of each stamp the whole estimator measures, the estimates averaged (1-8,
            :data:`legato.symmetry.SYMMETRY_COUNT`; 1: the stamp as given; :meth:`predict`). Averaging over
            the 8 removes most of a network's orientation-dependent error (ellipticity and the bright end gain
            most) at 8 passes.

        Raises
        ------
        ConfigError
            When ``symmetries`` is not in 1-8.
        """
        import keras

        import legato.models.layers  # noqa: F401  (registers the custom layers)

        self.symmetries = checked_symmetries(symmetries)
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.stamp_size = int(self.manifest["stamp_size"])
        self._compiled = None
        self.routes, self.base, self.stage, self.deblend = None, None, None, None
        if self.manifest.get("kind") == DEBLENDED_KIND:  # a base estimator shown the stamps without their neighbours
            self.base = LoadedEstimator(folder / self.manifest["base"])
            self.deblend = self.manifest["deblend"]
            self.members, self.uncertainty, self.input_range = [], self.base.uncertainty, self.base.input_range
            self.reference_sigma, self.psf_bands = self.base.reference_sigma, self.base.psf_bands
            return
        if self.manifest.get("kind") == REFINED_KIND:  # a base estimator and a photometric second stage (legato.models.refinement)
            self.base = LoadedEstimator(folder / self.manifest["base"])
            self.stage = RefinementStage.load(folder / self.manifest["refinement"])
            self.members, self.uncertainty, self.input_range = [], self.base.uncertainty, self.base.input_range
            self.reference_sigma, self.psf_bands = self.base.reference_sigma, self.base.psf_bands
            return
        if self.manifest.get("kind") == ROUTED_KIND:  # two estimators, each stamp measured by one (legato.models.routing)
            self.routes = {name: LoadedEstimator(folder / self.manifest["routes"][name]) for name in ROUTES}
            general = self.routes["blended"]
            self.members, self.uncertainty, self.input_range = [], general.uncertainty, general.input_range
            self.reference_sigma, self.psf_bands = general.reference_sigma, general.psf_bands
            return
        if self.manifest.get("kind") == "production":
            import legato.models.noise_aware  # noqa: F401  (registers the production layers)
        self.members = [
            (keras.saving.load_model(folder / m["model"], compile=False), TargetScaler.from_json(folder / m["scaler"]))
            for m in self.manifest["members"]
        ]
        self.uncertainty = self.manifest.get("uncertainty")
        range_values = self.manifest.get("input_range")
        self.input_range = InputRange.from_dict(range_values) if range_values else None
        self.reference_sigma = float(self.manifest.get("reference_sigma", 0.0))
        self.psf_bands = manifest_psf_bands(self.manifest)

    def averaging(self, symmetries: int) -> LoadedEstimator:
        """This estimator measuring each stamp in ``symmetries`` of its flips/rotations: the same networks, not reloaded.

        Raises
        ------
        ConfigError
            When ``symmetries`` is not in 1-8.
        """
        if checked_symmetries(symmetries) == self.symmetries:
            return self
        other = copy.copy(self)
        other.symmetries = int(symmetries)
        return other

    def psf_condition(self, band: str | None = None, psf_file=None, zeropoint: float | None = None, summary: tuple | None = None):
        """The :class:`~legato.models.psf_condition.PsfCondition` of a call (band, PSF file or PSF ``(FWHM, r50)``):
        :func:`~legato.models.psf_condition.resolve_psf` with this estimator's training bands.

        Raises
        ------
        ConfigError
            On a band or PSF the estimator cannot take.
        """
        from legato.models.psf_condition import resolve_psf

        return resolve_psf(self.psf_bands, band, psf_file, zeropoint, summary)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Columns :meth:`predict` returns, in order (``q`` with ``ellipticity``; only the targets its networks predict)."""
        if self.routes is not None:
            return self.routes["blended"].output_columns
        if self.base is not None:
            return self.base.output_columns
        targets = {name for _, scaler in self.members for name in scaler.targets}
        columns = [name for name in OUTPUT_COLUMNS if name in targets or (name == "q" and "ellipticity" in targets)]
        if self.uncertainty:
            for suffix in ERROR_SUFFIXES.values():
                columns += [f"{name}{suffix}" for name in SERSIC_COLUMNS]
            columns.append("sky_sigma")
        if self.psf_bands is not None:
            columns += ["psf_fwhm_arcsec", "zeropoint"]
        if self.input_range is not None:
            columns += ["mag_aper", "neighbour_fraction", "flags"]
        return tuple(columns)

    @property
    def measures_blends(self) -> bool:
        """Whether :meth:`predict` measures the stamps' blends (``neighbour_fraction`` and ``BLENDED``): it then takes them
        through ``blend=`` when the caller has measured them already."""
        return self.input_range is not None or self.routes is not None

    @property
    def deblends(self) -> bool:
        """Whether :meth:`predict` removes the neighbours first: its ``blend=`` then also takes the neighbour map
        (``blend_measurements(stamps, with_map=True)``) and, when prepared, the stamps without their neighbours.
        A routed estimator deblends when one of its routes does: the map is then measured once, for both."""
        if self.routes is not None:
            return any(route.deblends for route in self.routes.values())
        return self.deblend is not None

    def measure_blends(self, stamps: np.ndarray):
        """What :meth:`predict` takes as ``blend=`` for these stamps (None for an estimator that measures no blends).

        ``(neighbour_fraction, blended)``; for an estimator that :attr:`deblends`, also the neighbour map and the
        stamps with their neighbours removed (:func:`~legato.models.deblending.deblended_inputs`): prepared here,
        ``legato predict``'s reader thread does that work while the networks measure the previous chunk. A routed
        estimator stops at the map: its deblending route removes the neighbours of the rows it is given (the
        unflagged ones), in the networks' thread, which measured 2% faster end to end on crowded stamps than
        preparing them in the reader (``docs/scenes.md``).
        """
        if not self.measures_blends:
            return None
        from legato.io.stamp_checks import blend_measurements

        found = blend_measurements(stamps, with_map=self.deblends)
        if not self.deblends or self.routes is not None:  # a routed one: each deblending route removes its rows' neighbours
            return found
        return (*found, deblended_inputs(np.asarray(stamps, dtype=np.float32), found[2], int(self.deblend["grow_pix"])))

    def warm_up(self, batch_size: int = 256) -> None:
        """Build the networks' inference graphs now, for batches of ``batch_size`` stamps and of any other size.

        The first forward pass of each shape traces its graph (a quarter of a second on a 2-core CPU, then
        again for a chunk's shorter last batch); ``legato predict`` calls this while its reader prepares
        the first chunk, so that neither waits on the other. Values are not computed for any stamp.
        """
        if self.routes is not None or self.base is not None:
            for estimator in self.routes.values() if self.routes is not None else (self.base,):
                estimator.warm_up(batch_size)
            return
        for size in (batch_size, 1):  # the second shape makes the graph shape-relaxed (reduce_retracing)
            batch = np.zeros((size, self.stamp_size, self.stamp_size), dtype=np.float32)
            features = None if self.psf_bands is None else self.psf_condition().features(size)
            for forward in self._forward_passes():
                self._call(forward, batch, features, 0, size)

    def predict(self, stamps, batch_size: int = 256, checked: bool = False, psf=None, blend=None) -> dict[str, np.ndarray]:
        """Physical parameters of each stamp (columns ``mag, re_arcsec, n, q, ellipticity``).

        The networks run as compiled inference graphs on chunks of ``batch_size``
        (no ``keras.Model.predict`` pipeline: 10-40% faster on a CPU and far less
        per-request overhead when serving single stamps).

        Parameters
        ----------
        stamps : array-like
            ``(N, H, W)`` (or one ``(H, W)``) stamps, electrons/s.
        batch_size : int
            Stamps per forward pass.
        checked : bool
            The caller has already checked the stamps (:func:`validate_stamps`, then the
            per-stamp checks of :func:`legato.inference.predict.predict_stamps`): they are
            only cast to float32, not checked again.
        psf : PsfCondition, optional
            The stamps' PSF and zeropoint (:meth:`psf_condition`; default: F160W).
        blend : tuple of numpy.ndarray, optional
            The stamps' ``(neighbour_fraction, blended)`` when already measured
            (:meth:`measure_blends`, with the neighbour map and the deblended stamps for an estimator that :attr:`deblends`);
            else measured here.

        An estimator loaded with ``symmetries`` > 1 measures each stamp in that many of its flips/rotations
        and returns the average (:meth:`_averaged`).
        """
        if checked:
            x = np.asarray(stamps, dtype=np.float32)
        else:
            x = validate_stamps(stamps, self.stamp_size, max_batch=np.iinfo(np.int64).max)
        if psf is None and self.psf_bands is not None:
            psf = self.psf_condition()
        if self.symmetries > 1:
            return self._averaged(x, batch_size, psf, blend)
        return self._predict_once(x, batch_size, psf, blend)

    def _averaged(self, x: np.ndarray, batch_size: int, psf, blend) -> dict[str, np.ndarray]:
        """The estimates of :attr:`symmetries` flips/rotations of each stamp, averaged
        (:func:`legato.symmetry.average_estimates`: re and n in logarithm, the intervals shrunk by what averaging removes).

        The blends are measured once, on the stamps as given (a neighbour map is flipped with its stamp).
        """
        blend = self.measure_blends(x) if blend is None and self.measures_blends else blend
        passes = []
        for code in range(self.symmetries):
            codes = np.full(len(x), code)
            flipped = blend if code == 0 or blend is None or len(blend) < 3 else (*blend[:2], dihedral(blend[2], codes))
            passes.append(self._predict_once(x if code == 0 else dihedral(x, codes), batch_size, psf, flipped))
        return average_estimates(passes)

    def _predict_once(self, x: np.ndarray, batch_size: int, psf, blend) -> dict[str, np.ndarray]:
        """:meth:`predict` of checked stamps, each measured as given."""
        if self.routes is not None:
            return self._predict_routed(x, batch_size, psf, blend)
        if self.deblend is not None:
            blend = self.measure_blends(x) if blend is None or len(blend) < 3 else blend
            clean = blend[3] if len(blend) > 3 else deblended_inputs(x, blend[2], int(self.deblend["grow_pix"]))
            columns = self.base.predict(clean, batch_size, checked=True, psf=psf, blend=blend[:2])
            return widened(columns, self.manifest.get("blended_calibration"))
        blend = None if blend is None else blend[:2]
        if self.base is not None:
            columns = self.base.predict(x, batch_size, checked=True, psf=psf, blend=blend)
            return self.stage.apply(x, columns, ZEROPOINT_AB[BAND] if psf is None else psf.zeropoint)
        blend = self.measure_blends(x) if blend is None else blend
        features = None if self.psf_bands is None else psf.features(len(x))
        values, extra = {}, {}
        for forward, (_, scaler) in zip(self._forward_passes(), self.members):
            outputs = np.concatenate([self._call(forward, x, features, start, batch_size) for start in range(0, len(x), batch_size)])
            count = len(scaler.targets)
            values.update(scaler.inverse(outputs[:, :count]))
            if outputs.shape[1] > count:  # Gaussian head: log-variances, then ln(sigma / reference)
                noise_ratio = np.exp(outputs[:, 2 * count].astype(np.float64))
                blended = None if blend is None else blend[1]
                extra.update(self._uncertainties(scaler, outputs[:, count : 2 * count], values, noise_ratio, blended))
                extra["sky_sigma"] = self.reference_sigma * noise_ratio
        if psf is not None:  # magnitudes are learnt on the reference zeropoint
            values["mag"] = values["mag"] + psf.magnitude_offset
            extra["psf_fwhm_arcsec"] = np.broadcast_to(np.asarray(psf.fwhm_arcsec, dtype=float), (len(x),)).copy()
            extra["zeropoint"] = np.full(len(x), psf.zeropoint)
        columns = {**physical_columns(values), **extra}
        if self.input_range is not None:
            columns.update(self._input_checks(x, columns, psf, blend))
        return columns

    def _predict_routed(self, stamps: np.ndarray, batch_size: int, psf, blend=None) -> dict[str, np.ndarray]:
        """Each stamp measured by its route (:mod:`legato.models.routing`), the rows merged in order.

        The blends are measured once (:meth:`measure_blends`: with the neighbour map when a route deblends) and
        each route is given its rows of them.
        """
        isolated, general = self.routes["isolated"], self.routes["blended"]
        blend = self.measure_blends(stamps) if blend is None else blend
        own = isolated.psf_bands is not None or (psf.band, psf.psf_id, psf.zeropoint) == (
            (default := self.psf_condition()).band,
            default.psf_id,
            default.zeropoint,
        )
        sigma = self.manifest.get("disagreement_sigma")
        if own and sigma is not None:  # both on every stamp: where they disagree, a neighbour the detector missed
            first = isolated.predict(stamps, batch_size, checked=True, psf=psf if isolated.psf_bands is not None else None, blend=blend)
            second = general.predict(stamps, batch_size, checked=True, psf=psf, blend=blend)
            to_general = routed_rows(blend[1], own, disagreement(first, second), sigma)
            parts = [(rows, {k: v[rows] for k, v in part.items()}) for rows, part in ((~to_general, first), (to_general, second))]
        else:
            to_general = routed_rows(blend[1], own)
            parts = []
            for estimator, rows in ((isolated, ~to_general), (general, to_general)):
                if rows.any():
                    condition = psf if estimator.psf_bands is not None else None
                    part = estimator.predict(stamps[rows], batch_size, checked=True, psf=condition, blend=tuple(b[rows] for b in blend))
                    parts.append((rows, part))
        fill = {"psf_fwhm_arcsec": psf.fwhm_arcsec, "zeropoint": psf.zeropoint}
        return merge_routes(len(stamps), self.output_columns, parts, fill)

    @staticmethod
    def _call(forward, stamps: np.ndarray, features, start: int, batch_size: int) -> np.ndarray:
        """One forward pass of stamps ``start : start + batch_size`` (with their PSF inputs when the network takes them)."""
        batch = stamps[start : start + batch_size]
        if features is None:
            return forward(batch).numpy()
        return forward(batch, features[start : start + batch_size]).numpy()

    def _uncertainties(
        self, scaler: TargetScaler, log_variance: np.ndarray, values: dict, noise_ratio: np.ndarray, blended=None
    ) -> dict[str, np.ndarray]:
        """Calibrated 68% and 95% half-widths in physical units (relative errors of ln re and ln n times the value)."""
        from legato.models.noise_aware import gaussian_sigma
        from legato.models.uncertainty import scale_for

        sigma = gaussian_sigma(log_variance, scaler.std)
        out = {}
        for key, suffix in ERROR_SUFFIXES.items():
            factors = scale_for(self.uncertainty, key, values["mag"], noise_ratio, blended)
            for i, name in enumerate(scaler.targets):
                width = factors[:, i] * sigma[:, i]
                out[f"{name}{suffix}"] = width * values[name] if name in LOG_COLUMNS else width
        return out

    def _input_checks(self, stamps: np.ndarray, columns: dict, psf, blend) -> dict[str, np.ndarray]:
        """``mag_aper``, ``neighbour_fraction`` and the input flags; unmeasurable stamps get NaN in every estimate column.

        The training range is checked in the reference (F160W) zeropoint the network's fluxes are learnt on;
        ``mag_aper`` is in the stamps' own zeropoint. A PSF outside every training band's range flags every row.
        """
        from legato.models.psf_condition import psf_in_range

        checks = self.input_range.check(stamps, columns["sky_sigma"])
        outside = checks["outside"] | (False if psf is None else ~psf_in_range(self.psf_bands, psf))
        flags = np.where(outside, INPUT_OUT_OF_RANGE, 0).astype(np.int32)
        flags[blend[1]] |= BLENDED
        unmeasurable = checks["unmeasurable"]
        flags[unmeasurable] |= NO_SOURCE | FAILED_VALIDATION
        for name, values in columns.items():
            if name not in ("sky_sigma", "psf_fwhm_arcsec", "zeropoint"):
                columns[name] = np.where(unmeasurable, np.nan, values)
        mag_aper = checks["mag_aper"] + (0.0 if psf is None else psf.magnitude_offset)
        return {"mag_aper": mag_aper, "neighbour_fraction": blend[0], "flags": flags}

    def _forward_passes(self):
        if self._compiled is None:
            import tensorflow as tf

            if self.psf_bands is None:
                self._compiled = [
                    tf.function(lambda batch, m=model: m(batch, training=False), reduce_retracing=True) for model, _ in self.members
                ]
            else:
                self._compiled = [
                    tf.function(lambda batch, psf, m=model: m([batch, psf], training=False), reduce_retracing=True)
                    for model, _ in self.members
                ]
        return self._compiled


def write_manifest(folder: str | Path, members: list[dict], stamp_size: int, **info) -> Path:
    """Write the estimator manifest listing its networks (``model``) and scalers (``scaler``)."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps({"stamp_size": stamp_size, "members": members, "outputs": OUTPUT_COLUMNS, **info}, indent=2))
    return path
