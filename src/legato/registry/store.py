"""Access to the registry of the tracking store, with one-line errors."""

from __future__ import annotations

from pathlib import Path

from legato.errors import ConfigError
from legato.tracking import resolve_tracking_uri

DEFAULT_MODEL_NAME = "legato-sersic"
DEFAULT_ALIAS = "champion"


def registry_client(tracking_uri: str | None = None, must_exist: bool = True):
    """An ``MlflowClient`` on the project's store.

    Parameters
    ----------
    tracking_uri : str, optional
        Tracking URI (default: ``MLFLOW_TRACKING_URI`` or the SQLite default).
    must_exist : bool
        Refuse a SQLite store whose file does not exist yet (instead of
        silently creating an empty one).

    Raises
    ------
    ConfigError
        When there is no tracking store.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    prefix = "sqlite:///"
    if must_exist and uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_file():
        raise ConfigError(f"no tracking store at {uri[len(prefix) :]}: run the pipeline (dvc repro) or set MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def get_model(client, name: str):
    """The registered model ``name`` or a one-line error listing the known ones."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(known) or 'none'}") from None


def get_version(client, name: str, version: str | int):
    """One version of a registered model, or a one-line error."""
    from mlflow.exceptions import MlflowException

    get_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ConfigError(f"model {name!r} has no version {version}") from None


def version_by_alias(client, name: str, alias: str, required: bool = True):
    """The version an alias points to; None (or a one-line error when ``required``) if unset."""
    from mlflow.exceptions import MlflowException

    get_model(client, name)
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        if required:
            aliases = sorted({a for v in all_versions(client, name) for a in (v.aliases or [])})
            raise ConfigError(f"model {name!r} has no alias {alias!r}; aliases: {', '.join(aliases) or 'none'}") from None
        return None


def all_versions(client, name: str) -> list:
    """Every version of ``name``, oldest first, with its aliases (a search result omits them)."""
    numbers = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return [client.get_model_version(name, str(number)) for number in numbers]
