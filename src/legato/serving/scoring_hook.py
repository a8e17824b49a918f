"""The one place legato reaches into MLflow's scoring server (written against MLflow 3.17-3.18).

``mlflow models serve --env-manager local`` starts ``uvicorn
mlflow.pyfunc.scoring_server.app:app``, whose module body is
``app = scoring_server.init(scoring_server.load_model_with_mlflow_config(path))``:
the model loads first (:meth:`SersicEstimator.load_context` runs while the
module has no ``app`` yet), then ``init`` builds MLflow's FastAPI app and wraps
its ``/invocations`` endpoint (``transformation``) in
``scoring_server._async_catch_mlflow_exception``, a module global it looks up
when it runs. :func:`install` points that name, for exactly one use, at a
decorator that returns legato's endpoint (:mod:`legato.serving.endpoint`)
instead, then restores it. The process, uvicorn, the FastAPI app, ``/ping``,
``/health``, ``/version`` and MLflow's request-timeout middleware stay MLflow's.

With several workers (``mlflow models serve -w N``) uvicorn binds the listening
socket itself, without ``IPPROTO_TCP``, and asyncio then leaves Nagle's
algorithm on for the accepted connections: on a keep-alive connection every
answer after the first waits ~40 ms for the client's delayed ACK.
:func:`tcp_nodelay_listeners` sets ``TCP_NODELAY`` on the listening sockets the
worker inherited (Linux passes it on to accepted connections).

:func:`compatibility_problems` lists what the hook relies on. The test suite
asserts it is empty and sends requests through the hook to a real server, so an
MLflow release that changes any of it fails there, loudly. At serving time an
incompatible MLflow gets one warning in the server log and MLflow's own endpoint.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path

SUPPORTED_MLFLOW = ("3.17", "3.18")
APP_MODULE = "mlflow.pyfunc.scoring_server.app"
HOOKED_NAME = "_async_catch_mlflow_exception"
ENDPOINT_NAME = "transformation"

logger = logging.getLogger(__name__)


def compatibility_problems() -> list[str]:
    """What differs from the MLflow scoring server the hook was written for (empty when it fits)."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    problems = []
    if ".".join(mlflow.__version__.split(".")[:2]) not in SUPPORTED_MLFLOW:
        problems.append(f"MLflow {mlflow.__version__} is not one of {', '.join(SUPPORTED_MLFLOW)}")
    for name in (HOOKED_NAME, "_SERVER_MODEL_PATH", "init"):
        if not hasattr(scoring_server, name):
            problems.append(f"mlflow.pyfunc.scoring_server has no {name}")
    if hasattr(scoring_server, "init"):
        source = inspect.getsource(scoring_server.init)
        expected = f'@app.post("/invocations")\n    @{HOOKED_NAME}\n    async def {ENDPOINT_NAME}(request: Request):'
        if expected not in source:
            problems.append(f"scoring_server.init no longer wraps /invocations in {HOOKED_NAME}")
    spec = importlib.util.find_spec(APP_MODULE)  # read, never imported: importing it loads a model
    app_source = Path(spec.origin).read_text() if spec and spec.origin else ""
    if "scoring_server.init(" not in app_source or "load_model_with_mlflow_config(" not in app_source:
        problems.append(f"{APP_MODULE} no longer builds the app as init(load_model(...))")
    return problems


def in_scoring_server() -> bool:
    """True while MLflow's scoring-server app module is loading the model (the moment to :func:`install`)."""
    from mlflow.pyfunc import scoring_server

    module = sys.modules.get(APP_MODULE)
    model_path = getattr(scoring_server, "_SERVER_MODEL_PATH", "__pyfunc_model_path__")
    return module is not None and not hasattr(module, "app") and model_path in os.environ


def install(endpoint) -> bool:
    """Make ``endpoint`` the ``/invocations`` handler of the app MLflow builds next in this process.

    Parameters
    ----------
    endpoint : coroutine function
        ``async (request: starlette.requests.Request) -> starlette.responses.Response``.

    Returns
    -------
    bool
        False (and a warning) when MLflow's scoring server is not the one the hook fits.
    """
    problems = compatibility_problems()
    if problems:
        logger.warning("legato serving endpoint not installed, MLflow's own answers /invocations: %s", "; ".join(problems))
        return False
    from mlflow.pyfunc import scoring_server

    original = getattr(scoring_server, HOOKED_NAME)

    def legato_endpoint(func):
        setattr(scoring_server, HOOKED_NAME, original)  # one use: this init()'s /invocations
        if getattr(func, "__name__", "") != ENDPOINT_NAME:
            logger.warning("legato serving endpoint not installed: MLflow wrapped %r", getattr(func, "__name__", func))
            return original(func)
        return endpoint

    setattr(scoring_server, HOOKED_NAME, legato_endpoint)
    return True


def tcp_nodelay_listeners() -> int:
    """Set ``TCP_NODELAY`` on this process's listening (or bound, about to listen) TCP sockets; returns how many.

    Accepted connections inherit the option (Linux), so answers go out at once
    instead of waiting for the client's delayed ACK. Nothing happens where there
    is no listening socket yet (one worker: uvicorn binds after loading the app,
    and asyncio sets the option on those connections itself).
    """
    import socket
    import stat

    done = 0
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM and _server_socket(sock):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    done += 1
        except OSError:
            continue
    return done


def _server_socket(sock) -> bool:
    """Bound and not connected: a listening socket, or one bound to listen (the first worker loads before it listens)."""
    if sock.getsockname()[1] == 0:
        return False
    try:
        sock.getpeername()
    except OSError:
        return True
    return False
