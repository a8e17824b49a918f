"""The MLflow pyfunc model of an estimator: raw stamps in, physical Sérsic parameters and flags out.

:class:`SersicEstimator` wraps a :class:`~legato.models.estimator.LoadedEstimator`.
Clients send raw stamps ``(N, H, W)`` in electrons/s and get a table with
``mag`` (AB), ``re_arcsec`` (semi-major, arcsec), ``n``, ``q``, ``ellipticity``
(and the production estimator's uncertainty columns) and the per-row ``flags``
of ``legato predict``: the rows are made by the same function
(:func:`legato.inference.predict.predict_stamps`), so blank, non-physical or
source-less stamps come back flagged with NaN values, never invented ones.
:func:`log_estimator_model` logs an estimator folder as this model, with the
legato code and pinned CPU requirements bundled.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import numpy as np

from legato.errors import LegatoError
from legato.models.estimator import MAX_BATCH, LoadedEstimator, stamp_cube, validate_stamps

SERVING_PACKAGES = ("tensorflow-cpu", "keras", "mlflow", "numpy", "pandas", "astropy", "pyyaml", "orjson")
#: the request parameters of a PSF-conditioned estimator, with their defaults (0: the band's own value)
PSF_PARAMS = {"band": "F160W", "zeropoint": 0.0, "psf_fwhm_arcsec": 0.0, "psf_r50_arcsec": 0.0}
#: the request parameter of every model, with its default: flips/rotations measured per stamp, averaged (1-8,
#: ``legato predict --symmetries``)
AVERAGING_PARAMS = {"symmetries": 1}


def pinned_requirements() -> list[str]:
    """Exact versions of the packages the logged model needs (CPU TensorFlow only)."""
    pins = []
    for name in SERVING_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_estimator_model(folder: str | Path, example: np.ndarray, training_range=None):
    """Log an estimator folder as the pyfunc model ``model`` of the active MLflow run.

    The model bundles the legato code and pinned CPU requirements, takes raw
    stamps ``(N, H, W)`` (signature and input example from ``example``) and
    returns a DataFrame of physical parameters and per-row ``flags``.

    Parameters
    ----------
    folder : str or Path
        The estimator folder.
    example : numpy.ndarray
        A few stamps.
    training_range : TrainingRange, optional
        Range for the ``OUT_OF_RANGE`` flag, stored as the model configuration
        ``training_range``; serving can set or replace it (``legato serve
        --params``, or MLflow's ``SERVING_MODEL_CONFIG``).

    Returns
    -------
    mlflow.models.model.ModelInfo
    """
    import mlflow

    return mlflow.pyfunc.log_model(name="model", **_pyfunc_arguments(folder, example, training_range))


def save_estimator_model(folder: str | Path, path: str | Path, example: np.ndarray, training_range=None) -> Path:
    """:func:`log_estimator_model` into a local folder ``path`` instead of a run (no tracking store)."""
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **_pyfunc_arguments(folder, example, training_range))
    return Path(path)


def _pyfunc_arguments(folder: str | Path, example: np.ndarray, training_range) -> dict:
    import pandas as pd
    from mlflow.models import infer_signature

    import legato

    estimator = LoadedEstimator(folder)
    params = {**(PSF_PARAMS if estimator.psf_bands is not None else {}), **AVERAGING_PARAMS}
    return {
        "python_model": SersicEstimator(),
        "artifacts": {"estimator": str(folder)},
        "code_paths": [str(Path(legato.__file__).parent)],
        "signature": infer_signature(example, pd.DataFrame(model_rows(estimator, example)), params=params),
        "input_example": example,
        "pip_requirements": pinned_requirements(),
        "model_config": {"training_range": training_range.as_meta() if training_range is not None else None},
    }


def request_psf(estimator: LoadedEstimator, params: dict | None):
    """The PSF condition of a request's parameters (:data:`PSF_PARAMS`; missing or 0: the band's own value).

    Raises
    ------
    ConfigError
        On an unknown parameter, a band or PSF the estimator cannot take.
    """
    from legato.errors import ConfigError

    known = {**PSF_PARAMS, **AVERAGING_PARAMS}
    unknown = sorted(set(params or {}) - set(known))
    if unknown:
        raise ConfigError(f"unknown request parameters {unknown}; known: {', '.join(known)}")
    params = {key: value for key, value in (params or {}).items() if key in PSF_PARAMS}
    if not params:
        return None
    band = params.get("band") or None
    if band is not None and not isinstance(band, str):
        raise ConfigError(f"band must be a band name such as F125W, got {band!r}")
    try:
        numbers = {key: float(params.get(key) or 0.0) for key in ("zeropoint", "psf_fwhm_arcsec", "psf_r50_arcsec")}
    except (TypeError, ValueError):
        raise ConfigError("zeropoint, psf_fwhm_arcsec and psf_r50_arcsec must be numbers") from None
    sizes = (numbers["psf_fwhm_arcsec"], numbers["psf_r50_arcsec"])
    if (sizes[0] > 0) != (sizes[1] > 0):
        raise ConfigError("give both psf_fwhm_arcsec and psf_r50_arcsec (arcsec), or neither")
    return estimator.psf_condition(
        band=band,
        zeropoint=numbers["zeropoint"] or None,
        summary=sizes if sizes[0] > 0 else None,
    )


def model_rows(
    estimator: LoadedEstimator, stamps, training_range=None, max_batch: int = MAX_BATCH, psf=None, flags=None
) -> dict[str, np.ndarray]:
    """What the MLflow model returns for ``stamps``: value columns and ``flags``, as ``legato predict`` writes them.

    Parameters
    ----------
    estimator : LoadedEstimator
        The networks.
    stamps : array-like or pandas.DataFrame
        Raw stamps (see :func:`stamp_cube`); NaN/inf pixels are flagged, not refused.
    training_range : TrainingRange, optional
        Range for ``OUT_OF_RANGE``.
    max_batch : int
        Most stamps accepted.
    psf : PsfCondition, optional
        The stamps' PSF and zeropoint (:func:`request_psf`; default F160W).
    flags : numpy.ndarray, optional
        ``(N,)`` input flags (e.g. a Spark shard's ``RESIZED``), completed, not modified.

    Raises
    ------
    DataError
        On a wrong shape, a non-numeric dtype, an empty or oversized batch.
    """
    from legato.inference.predict import predict_stamps

    size = estimator.stamp_size
    cube = validate_stamps(stamp_cube(stamps, size), size, max_batch=max_batch, allow_nonfinite=True)
    flags = np.zeros(len(cube), dtype=np.int32) if flags is None else np.asarray(flags, dtype=np.int32)
    columns, flags = predict_stamps(estimator, cube, flags, training_range, psf=psf)
    return {**columns, "flags": flags}


def serving_max_batch() -> int:
    """Largest batch a served model accepts: ``LEGATO_MAX_BATCH`` or ``MAX_BATCH`` stamps."""
    value = os.environ.get("LEGATO_MAX_BATCH", "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_BATCH


try:  # MLflow is heavy: the pyfunc class is only defined where MLflow is importable
    import mlflow.pyfunc

    class SersicEstimator(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc model: raw stamps ``(N, H, W)`` -> DataFrame of Sérsic parameters and ``flags``.

        Also accepts a DataFrame whose first column holds stamps, 2-D or
        flattened to ``H * W`` values (row-major). Rows come from
        :func:`legato.inference.predict.predict_stamps`, as in ``legato predict``;
        the training range for ``OUT_OF_RANGE`` is the model configuration's
        ``training_range`` (``TrainingRange.as_meta()``; set when logging, or at
        serving time through MLflow's ``SERVING_MODEL_CONFIG``). Under
        ``mlflow models serve`` the ``/invocations`` endpoint is legato's
        (:mod:`legato.serving.endpoint`): a body-size limit, strict JSON and
        one-line JSON errors.
        """

        def load_context(self, context):
            from legato.flags import TrainingRange
            from legato.serving import scoring_hook

            self.estimator = LoadedEstimator(context.artifacts["estimator"])
            config = getattr(context, "model_config", None) or {}
            limits = config.get("training_range")
            self.training_range = TrainingRange.from_meta(limits) if limits else None
            self.max_batch = serving_max_batch()
            if scoring_hook.in_scoring_server():
                from legato.serving.endpoint import invocations_endpoint

                scoring_hook.install(invocations_endpoint(self.rows, self.estimator.stamp_size, self.max_batch))
                scoring_hook.tcp_nodelay_listeners()

        def rows(self, stamps, params: dict | None = None, flags=None, training_range=None, symmetries: int = 1) -> dict[str, np.ndarray]:
            """:func:`model_rows` with this model's batch limit and the request's PSF parameters.

            ``flags`` are input flags to complete; ``training_range`` replaces the model's own (the Spark
            path passes ``legato predict --params``' range, as the local path uses it); ``symmetries``
            averages each stamp's flips/rotations (``legato predict --engine spark --symmetries``,
            :meth:`~legato.models.estimator.LoadedEstimator.averaging`), a request's ``symmetries``
            parameter (:data:`AVERAGING_PARAMS`) in its place when given.
            """
            limits = training_range if training_range is not None else self.training_range
            psf = request_psf(self.estimator, params)
            count = (params or {}).get("symmetries", symmetries)
            return model_rows(self.estimator.averaging(count), stamps, limits, self.max_batch, psf, flags)

        def predict(self, context, model_input, params=None):
            import pandas as pd
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            try:
                return pd.DataFrame(self.rows(model_input, params))
            except LegatoError as exc:
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None

except ImportError:  # pragma: no cover
    SersicEstimator = None
