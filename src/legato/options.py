"""Command-line option values shared by the command modules."""

from __future__ import annotations

from pathlib import Path

from legato.errors import ConfigError


def parse_mapping(values: list[str], option: str) -> dict[str, Path]:
    """``name=path`` command-line values as a dict of ``Path``."""
    mapping = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{option} expects name=path, got {value!r}")
        mapping[name] = Path(path)
    return mapping
