"""What the command modules share: option types, the one-line error wrapper, fingerprint settling, registry settings."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.errors import LegatoError

ParamsOption = Annotated[Path, typer.Option("--params", help="Parameter file (YAML).")]
ModelOption = Annotated[Optional[str], typer.Option("--model", help="Registered model name (default: params registry.name).")]
AliasOption = Annotated[str, typer.Option(help="Alias to move.")]


def one_line_errors(command):
    """Report a :class:`LegatoError` as one line on stderr and exit with status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LegatoError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def settled(out: Path, recipes: dict, code_sources: tuple, report: Optional[Path], summary: dict) -> dict:
    """Fingerprint a regenerated set against the one its report records (docs/reproducibility.md); the summary with them."""
    from legato.io.fingerprint import code_digest, settle_set

    records, outcomes = settle_set(out, recipes, code_digest(code_sources), report)
    for split, outcome in outcomes.items():
        typer.echo(
            f"{out / split}: fingerprint {outcome['outcome']}"
            + (f" (largest deviation {outcome['largest_deviation']} of the tolerance)" if "largest_deviation" in outcome else "")
        )
    return summary | {"fingerprints": records, "fingerprint_check": {"set": str(out), "splits": outcomes}}


def registry_settings(params: Path, tracking_uri: str | None, must_exist: bool = True):
    """The ``registry`` settings of params.yaml and a registry client on the project's store."""
    from legato.config import load_params
    from legato.registry.store import registry_client
    from legato.tracking import tracking_settings

    loaded = load_params(params)
    settings = dict(loaded.get("registry") or {})
    uri, _ = tracking_settings(loaded, tracking_uri)
    return settings, registry_client(uri, must_exist=must_exist)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_in_foreground(what: str, start: Callable[[], None], wait: Callable[[], int], stop: Callable[[], None], lines: Callable[[], list]):
    """Start a server, print ``lines()``, wait for it; Ctrl-C or SIGTERM stops it (exit 0); a failing exit of its own is an error.

    The foreground of ``legato team db|server`` and ``legato spark-cluster``: ``wait`` returns the server's exit status.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        start()
        for line in lines():
            typer.echo(line)
        status = wait()
    except KeyboardInterrupt:
        stop()
        typer.echo(f"{what} stopped", err=True)
        return
    finally:
        stop()
        signal.signal(signal.SIGTERM, previous)
    if status != 0:
        raise LegatoError(f"{what} exited with status {status} (see its log)")
    typer.echo(f"{what} exited", err=True)
