"""The ``simulate`` and ``bands`` sections of ``params.yaml`` as simulation configuration objects."""

from __future__ import annotations

from typing import Any

from legato.config import section
from legato.errors import ConfigError


def _number(values: dict, key: str, kind=float, where: str = "simulate"):
    if key not in values:
        raise ConfigError(f"missing parameter {where}.{key}")
    try:
        return kind(values[key])
    except (TypeError, ValueError):
        raise ConfigError(f"parameter {where}.{key} must be a {kind.__name__}, got {values[key]!r}") from None


def simulation_config(params: dict[str, Any], overrides: dict[str, Any] | None = None):
    """Build a :class:`~legato.simulation.simulate.SimulationConfig` from the ``simulate`` section.

    Parameters
    ----------
    params : dict
        Parsed params.yaml.
    overrides : dict, optional
        Flat keys of the section to replace (e.g. ``{"mag_max": 23.0}``); ``None`` values are ignored.

    Returns
    -------
    SimulationConfig

    Raises
    ------
    ConfigError
        On a missing key, a value of the wrong type or out of range, or an unknown band.
    """
    from legato.simulation.noise import NoiseModel
    from legato.simulation.parameters import ParameterSpace
    from legato.simulation.simulate import SimulationConfig

    values = dict(section(params, "simulate"))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    sizes = values.get("sizes")
    if not isinstance(sizes, dict):
        raise ConfigError("parameter simulate.sizes must map split names to sizes")
    for split, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(f"simulate.sizes.{split} must be a non-negative integer, got {size!r}")
    noise = values.get("noise")
    if not isinstance(noise, dict):
        raise ConfigError("missing parameter section simulate.noise")
    space = ParameterSpace(
        mag_min=_number(values, "mag_min"),
        mag_max=_number(values, "mag_max"),
        re_min_arcsec=_number(values, "re_min_arcsec"),
        re_max_arcsec=_number(values, "re_max_arcsec"),
        bandwidth=_number(values, "bandwidth"),
        n_grid_dex=_number(values, "n_grid_dex"),
        max_offset_pix=_number(values, "max_offset_pix"),
    )
    return SimulationConfig(
        catalog=str(values.get("catalog", "")),
        psf=str(values.get("psf", "")),
        sizes={k: int(v) for k, v in sizes.items()},
        seed=_number(values, "seed", int),
        band=str(values.get("band", "F160W")),
        stamp_size=_number(values, "stamp_size", int),
        pixel_scale=_number(values, "pixel_scale"),
        chunk_size=_number(values, "chunk_size", int),
        space=space,
        noise=NoiseModel(
            sky_sigma=_number(noise, "sky_sigma", where="simulate.noise"),
            exposure_time=_number(noise, "exposure_time", where="simulate.noise"),
        ),
        snr_threshold_sigma=_number(values, "snr_threshold_sigma"),
    )


def band_mixture(params: dict[str, Any]):
    """The ``bands`` section: a :class:`~legato.simulation.simulate.BandMixture`, the split sizes and the seed.

    Raises
    ------
    ConfigError
        On a missing key or a band without a PSF, catalogue or weight.
    """
    from legato.simulation.simulate import BandMixture

    values = dict(section(params, "bands"))
    for key in ("psfs", "catalogs", "weights", "sizes"):
        if not isinstance(values.get(key), dict):
            raise ConfigError(f"parameter bands.{key} must map band (or split) names to values")
    mixture = BandMixture(
        psfs={str(k): str(v) for k, v in values["psfs"].items()},
        catalogs={str(k): str(v) for k, v in values["catalogs"].items()},
        weights={str(k): float(v) for k, v in values["weights"].items()},
        psf_jitter=_number(values, "psf_jitter", where="bands"),
    )
    return mixture, {k: int(v) for k, v in values["sizes"].items()}, _number(values, "seed", int, where="bands")
