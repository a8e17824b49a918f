"""A server process in its own process group: started, waited for until it answers, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from legato.errors import LegatoError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    """Whether ``url`` answers HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ManagedProcess:
    """A server process started in its own process group, ready when it answers.

    Parameters
    ----------
    command : list of str
        The command line.
    port : int
        The loopback port it listens on.
    health_path : str, optional
        An HTTP path that answers 200 once the server is ready; None: ready once
        the port accepts TCP connections (or when ``ready`` says so).
    env : dict
        The child's environment.
    log_path : str or Path, optional
        Where its stdout and stderr go (the tail is quoted when it fails).
    ready : callable, optional
        A readiness test replacing the HTTP/TCP one.
    popen_options : dict, optional
        Further keyword arguments of :class:`subprocess.Popen` (``user``, ``group``,
        ``extra_groups``, ``cwd``: e.g. a database server that refuses to run as root).
    """

    def __init__(
        self,
        command: list[str],
        port: int,
        health_path: str | None,
        env: dict,
        log_path: str | Path | None = None,
        ready: Callable[[], bool] | None = None,
        popen_options: dict | None = None,
    ):
        self.command, self.port, self.health_path, self.env = command, port, health_path, env
        self.log_path = Path(log_path) if log_path else None
        self.ready = ready
        self.popen_options = dict(popen_options or {})
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id (the process group leader), once started."""
        return self.process.pid if self.process is not None else None

    def is_ready(self) -> bool:
        """Whether the server answers now."""
        if self.ready is not None:
            return self.ready()
        if self.health_path is not None:
            return http_ok(self.url + self.health_path)
        return port_open(self.port)

    def start(self, timeout: float = 120.0) -> ManagedProcess:
        """Start the process and wait until it answers; raise with its log tail if it dies or times out."""
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self.popen_options
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LegatoError(f"{Path(self.command[0]).name} exited with status {self.process.returncode}: {self._log_tail()}")
            if self.is_ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise LegatoError(f"{' '.join(self.command[:4])} did not answer on {self.url} within {timeout:.0f} s: {self._log_tail()}")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, kill: bool = False) -> None:
        """Stop the process group by PID: SIGTERM (SIGKILL at once when ``kill``), then SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.is_file():
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        return "(no log)"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
