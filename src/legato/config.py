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
    params = read_document(path, "parameter file", "yaml")
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return params


def read_document(path: str | Path, what: str, language: str = "yaml") -> Any:
    """The parsed content of a YAML or JSON file, or a one-line error naming ``what`` it is.

    Raises
    ------
    ConfigError
        ``<what> not found: <path>`` or ``cannot parse <path>: <the parser's first line>``.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) if language == "yaml" else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None


def section(params: dict[str, Any], name: str, override: str | None = None) -> dict[str, Any]:
    """One section of the parameters, or a one-line error naming it.

    With ``override`` (another section's name, e.g. ``refine_scenes`` for ``refine``), that section's keys replace
    ``name``'s in the returned copy.
    """
    value = params.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"params.yaml has no {name!r} section")
    if override is None or override == name:
        return value
    return {**value, **section(params, override)}
