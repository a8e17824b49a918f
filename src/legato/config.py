"""Reading ``params.yaml``: the file, and one section of it with a one-line error when it is missing.

Each package turns its own section into its configuration objects (e.g.
:func:`legato.simulation.settings.simulation_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from legato.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read a parameter file.

    Raises
    ------
    ConfigError
        If the file is missing or is not a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of the parameters, or a one-line error naming it."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"params.yaml has no {name!r} section")
    return value
