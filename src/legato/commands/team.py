"""``legato team db|server``: a shared MLflow tracking server on PostgreSQL, each in the foreground (docs/scale.md).

Both start their server in its own process group, print its PID and where it
answers, and stay in the foreground until the server exits or they are
interrupted (Ctrl-C, or SIGTERM to this command), which stops the server by PID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import run_in_foreground
from legato.errors import ConfigError

PortOption = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]


def _redacted(uri: str) -> str:
    """``uri`` without the password of its user part."""
    head, sep, rest = uri.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at or ":" not in credentials:
        return uri
    return f"{head}{sep}{credentials.split(':', 1)[0]}:***@{place}"


def db(
    data: Annotated[Path, typer.Option(help="The database's data folder (initialised on first use, reused after).")],
    port: PortOption = 5432,
    database: Annotated[str, typer.Option(help="The database MLflow uses.")] = "mlflow",
    user: Annotated[str, typer.Option(help="Its owner, the login role MLflow connects as.")] = "mlflow",
    log: Annotated[Optional[Path], typer.Option(help="The server's log (default: <data>.log).")] = None,
):
    """Run PostgreSQL on 127.0.0.1 for the team's tracking server, with the database and role for MLflow (Ctrl-C stops it).

    Needs PostgreSQL's server binaries (Debian/Ubuntu: apt-get install postgresql);
    run as root, the server runs as the system user postgres. Only processes on this
    machine can connect (trust authentication on loopback): run `legato team server`
    beside it.
    """
    from legato.platform.postgres import LocalPostgres, postgres_bin_dir

    postgres_bin_dir()
    server = LocalPostgres(data, port, database, user, log)
    fresh = not (server.data_dir / "PG_VERSION").is_file()

    def lines():
        return [
            f"PostgreSQL on 127.0.0.1:{port} (pid {server.pid}); data {server.data_dir} "
            f"({'initialised now' if fresh else 'reused'}); log {server.log_path}",
            f"MLflow store: {server.uri}",
            f"next: legato team server --backend-store-uri {server.uri} --artifacts <folder>",
            "Ctrl-C (or SIGTERM to this command) stops it",
        ]

    run_in_foreground("PostgreSQL", server.start, server.wait, server.stop, lines)


def server(
    backend_store_uri: Annotated[
        str, typer.Option(help="The runs' and registry's database: postgresql+psycopg://USER@HOST:PORT/DB (what legato team db prints).")
    ],
    artifacts: Annotated[Path, typer.Option(help="Where the server keeps the artifacts clients upload through it.")] = Path("mlartifacts"),
    host: Annotated[str, typer.Option(help="Interface to listen on: 127.0.0.1 (this machine) or 0.0.0.0 (the team's network).")] = (
        "127.0.0.1"
    ),
    port: PortOption = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 4,
    log: Annotated[Optional[Path], typer.Option(help="The server's log (default: <artifacts>.log).")] = None,
):
    """Run the team's MLflow tracking server over a database, serving the artifacts to clients (Ctrl-C stops it).

    Clients on any machine set MLFLOW_TRACKING_URI=http://<this machine>:<port> and
    log runs, models and artifacts through it; see docs/scale.md.
    """
    from legato.platform.postgres import check_database
    from legato.platform.process import port_open
    from legato.registry.history import SQL_SCHEMES
    from legato.serving.server import tracking_server

    scheme = backend_store_uri.split(":", 1)[0].split("+", 1)[0].lower()
    if "://" not in backend_store_uri or scheme not in SQL_SCHEMES:
        raise ConfigError(f"--backend-store-uri must be a database URI (postgresql+psycopg://USER@HOST:PORT/DB), not {backend_store_uri!r}")
    if scheme == "postgresql":
        check_database(backend_store_uri)
    if port_open(port, "127.0.0.1" if host in ("0.0.0.0", "::") else host):
        raise ConfigError(f"port {port} on {host} is in use: choose another --port")
    artifacts = artifacts.absolute()
    artifacts.mkdir(parents=True, exist_ok=True)
    log = log or artifacts.with_name(artifacts.name + ".log")
    process = tracking_server(backend_store_uri, artifacts, port, log, workers=workers, serve_artifacts=True, host=host)

    def lines():
        return [
            f"MLflow tracking server on http://{host}:{port} (pid {process.pid}, {workers} workers); store {_redacted(backend_store_uri)}; "
            f"artifacts {artifacts} (served to clients); log {log}",
            f"clients: export MLFLOW_TRACKING_URI=http://{'<this machine>' if host in ('0.0.0.0', '::') else host}:{port}",
            "Ctrl-C (or SIGTERM to this command) stops it",
        ]

    run_in_foreground("the MLflow tracking server", process.start, lambda: process.process.wait(), process.stop, lines)
