"""A PostgreSQL database on this machine for a shared MLflow tracking server, on loopback, stopped by PID.

:class:`LocalPostgres` initialises a data directory once (``initdb``: UTF-8,
C collation, trust authentication for TCP from 127.0.0.1 only), runs the
``postgres`` server of Debian's (or any) PostgreSQL installation on
127.0.0.1 with no Unix socket, creates a login role and a database owned by
it, and gives the SQLAlchemy URI MLflow takes
(``postgresql+psycopg://USER@127.0.0.1:PORT/DATABASE``).

Only processes on this machine can connect, without a password: the MLflow
tracking server runs beside the database, and team members reach the runs
through the tracking server's HTTP API, never the database itself.

PostgreSQL refuses to run as root. When this process is root, ``initdb`` and
``postgres`` run as the system user ``postgres`` (created by Debian's
``postgresql`` package), which owns the data directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path

from legato.errors import ConfigError, LegatoError
from legato.platform.process import LOOPBACK, ManagedProcess, free_port, port_open

SERVER_BINARIES = ("initdb", "postgres", "pg_isready")
INSTALL_HINT = "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) or put its bin directory on PATH"
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Seconds a fast shutdown (SIGINT: sessions ended, a checkpoint written) may take before the group is killed.
SHUTDOWN_TIMEOUT = 30.0
HBA = """\
# legato: trust authentication for TCP from this machine only (the server listens on 127.0.0.1, no Unix socket)
host    all    all    127.0.0.1/32    trust
"""


def _has_server(folder: Path) -> bool:
    return all((folder / name).is_file() and os.access(folder / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(folder: str) -> tuple:
    version = Path(folder).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def postgres_bin_dir() -> Path:
    """The directory of the PostgreSQL server binaries (``initdb``, ``postgres``, ``pg_isready``).

    Looked for in order: ``initdb`` on ``PATH`` (symbolic links followed),
    ``pg_config --bindir``, and Debian's ``/usr/lib/postgresql/<version>/bin``
    (the highest version).

    Raises
    ------
    ConfigError
        When no installation has them, saying how to install one.
    """
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.extend(Path(folder) for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True))
    for folder in candidates:
        if _has_server(folder):
            return folder
    raise ConfigError(f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) not found: {INSTALL_HINT}")


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as: ``postgres`` when this process is root, else None (this user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ConfigError(
            f"PostgreSQL refuses to run as root and there is no system user {SYSTEM_USER!r}: {INSTALL_HINT}, or run as another user"
        ) from None


def _account_options(account: pwd.struct_passwd | None, cwd: Path) -> dict:
    """:class:`subprocess.Popen` options that run a child as ``account`` (nothing to change when None)."""
    if account is None:
        return {"cwd": str(cwd)}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "cwd": str(cwd)}


def _reachable(folder: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` may traverse every existing ancestor of ``folder`` (search permission)."""
    groups = {account.pw_gid} | {g.gr_gid for g in _groups_of(account.pw_name)}
    for parent in [folder, *folder.parents]:
        if not parent.exists():
            continue
        info = parent.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid in groups:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return False
    return True


def _groups_of(user: str) -> list:
    import grp

    return [g for g in grp.getgrall() if user in g.gr_mem]


def _check_name(kind: str, value: str) -> str:
    if not NAME.match(value):
        raise ConfigError(f"{kind} {value!r}: use lower-case letters, digits and _ (at most 63, not starting with a digit)")
    return value


class LocalPostgres:
    """A PostgreSQL server on 127.0.0.1 over a data directory it initialises on first use.

    Parameters
    ----------
    data_dir : str or Path
        The cluster's data directory: created and initialised when absent or empty,
        reused when it holds a cluster (``PG_VERSION``).
    port : int, optional
        TCP port on 127.0.0.1 (default: a free one).
    database, user : str
        The database MLflow uses and the login role owning it (created if absent).
    log_path : str or Path, optional
        The server's log (default: ``<data_dir>.log`` beside the data directory).

    Examples
    --------
    >>> with LocalPostgres("/srv/legato/pg", port=5432) as db:  # doctest: +SKIP
    ...     print(db.uri)  # postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, database: str = "mlflow", user: str = "mlflow", log_path=None):
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.database, self.user = _check_name("database", database), _check_name("user", user)
        self.log_path = Path(log_path) if log_path else self.data_dir.with_name(self.data_dir.name + ".log")
        self.server: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI of the database (MLflow's ``--backend-store-uri``)."""
        return f"postgresql+psycopg://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, once started."""
        return self.server.pid if self.server is not None else None

    def initialise(self) -> bool:
        """Create the cluster in ``data_dir`` unless one is there; True when created now.

        Raises
        ------
        ConfigError
            When ``data_dir`` is a non-empty folder without a cluster, or ``initdb`` fails.
        """
        if (self.data_dir / "PG_VERSION").is_file():
            return False
        if self.data_dir.exists() and (not self.data_dir.is_dir() or any(self.data_dir.iterdir())):
            raise ConfigError(f"{self.data_dir} exists and holds no PostgreSQL cluster (no PG_VERSION): choose an empty or new folder")
        account = _run_as()
        self._prepare_dir(account)
        command = [
            str(postgres_bin_dir() / "initdb"),
            "-D",
            str(self.data_dir),
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        done = subprocess.run(command, capture_output=True, text=True, **_account_options(account, self.data_dir.parent))
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise ConfigError(f"initdb {self.data_dir} failed: {lines[-1] if lines else done.returncode}")
        (self.data_dir / "pg_hba.conf").write_text(HBA)
        return True

    def _prepare_dir(self, account: pwd.struct_passwd | None) -> None:
        """Create the data directory (mode 0700), owned by the server's account."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if account is not None:
            if not _reachable(self.data_dir.parent, account):
                raise ConfigError(
                    f"the system user {account.pw_name!r} cannot reach {self.data_dir.parent} (a parent folder is private): "
                    "choose a data folder it can traverse (e.g. under /srv or /var/lib)"
                )
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        """Initialise if needed, start the server, create the role and database; return self.

        Raises
        ------
        ConfigError
            When the port is in use or the binaries are missing.
        LegatoError
            When the server exits or does not answer within ``timeout`` seconds (with its log tail).
        """
        if port_open(self.port):
            raise ConfigError(f"port {self.port} on {LOOPBACK} is in use: choose another --port")
        self.initialise()
        account = _run_as()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = postgres_bin_dir()
        command = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-h", LOOPBACK, "-p", str(self.port), "-k", ""]
        self.server = ManagedProcess(
            command,
            self.port,
            None,
            dict(os.environ, LC_ALL="C"),
            self.log_path,
            ready=lambda: self._accepting(bin_dir),
            popen_options=_account_options(account, self.data_dir),
        )
        self.server.start(timeout)
        try:
            self.create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _accepting(self, bin_dir: Path) -> bool:
        """Whether the server accepts connections (``pg_isready`` over TCP)."""
        command = [str(bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]
        try:
            return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def create_database(self, database: str | None = None) -> str:
        """Create the login role ``user`` and a database owned by it (default ``database``), unless they exist.

        Returns
        -------
        str
            The SQLAlchemy URI of that database.
        """
        name = self.database if database is None else _check_name("database", database)
        psycopg = require_driver()
        from psycopg import sql

        with psycopg.connect(host=LOOPBACK, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as connection:
            if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)).fetchone() is None:
                connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(self.user)))
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                connection.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(sql.Identifier(name), sql.Identifier(self.user))
                )
        return self.uri.rsplit("/", 1)[0] + "/" + name

    def alive(self) -> bool:
        """Whether the server process still runs."""
        return self.server is not None and self.server.alive()

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        if self.server is None or self.server.process is None:
            raise LegatoError("the PostgreSQL server was not started")
        return self.server.process.wait()

    def stop(self) -> None:
        """Stop the server by PID: a fast shutdown (SIGINT), then SIGKILL of its process group after 30 s."""
        if not self.alive():
            return
        process = self.server.process
        try:
            os.kill(process.pid, signal.SIGINT)
            process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.server.stop(kill=True)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def check_database(uri: str, timeout: float = 5.0) -> None:
    """Connect once to the PostgreSQL database of an SQLAlchemy URI (``postgresql+psycopg://...``).

    Parameters
    ----------
    uri : str
        The URI, as MLflow's ``--backend-store-uri`` takes it.
    timeout : float
        Seconds to wait for the connection.

    Raises
    ------
    ConfigError
        When the driver is missing or the database does not answer, in one line.
    """
    psycopg = require_driver()
    _, _, rest = uri.partition("://")
    place = rest.rpartition("@")[2].split("?", 1)[0]
    try:
        with psycopg.connect(f"postgresql://{rest}", connect_timeout=max(1, round(timeout))):
            pass
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"cannot connect to the database {place}: {reason} (start it: legato team db)") from None


def require_driver():
    """The psycopg module MLflow's ``postgresql+psycopg://`` URIs use, or a one-line error saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("MLflow on PostgreSQL needs the psycopg driver: pip install '.[team]' (or the lock)") from None
    return psycopg
