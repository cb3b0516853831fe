"""Prefect settings for CLI runs: local ephemeral API, quiet logs, no tracebacks for user mistakes.

This is the thin integration module the style guide allows: it touches Prefect's logging and how
its ephemeral API server is started, and is imported only by the CLI before a flow runs.

The ephemeral server (`prefect.server.api.server.SubprocessASGIServer`, ~230 MB) is a child
process that Prefect stops at exit; a SIGKILL of moaa, or Ctrl-C sent to moaa alone (which exits
without running atexit handlers), would leave it running under PID 1. So the server is started
through a small wrapper that exits as soon as its parent is gone (the same watcher as the local
model server's, moaa.local.server.WATCHED_CHILD).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable

from moaa.errors import MoaaError

_USER_ERRORS = (
    "MoaaError", "ConfigError", "InputError", "EndpointError", "FailureRateExceeded", "RunStopped", "StorageError",
    "FolderBusy",
)  # fmt: skip


class _UserErrorFilter(logging.Filter):
    """Drop Prefect's traceback records for MoaaError: the CLI prints those as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (MoaaError, KeyboardInterrupt)):
            return False
        text = record.getMessage()
        if "aborted by an interrupt signal" in text:
            return False  # Ctrl-C: the CLI says what was kept and how to resume
        return not any(name in text for name in _USER_ERRORS)


def quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # The ephemeral API server is a subprocess; on a loaded 2-core machine it needs more than 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    import prefect.logging.configuration  # noqa: F401 - sets up Prefect's handlers first

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(name).addFilter(_UserErrorFilter())
    watch_ephemeral_server()


def watch_ephemeral_server() -> None:
    """Start Prefect's ephemeral API server so that it exits when this process dies (any way).

    Replaces `SubprocessASGIServer._run_uvicorn_command` with the same command (prefect 3.8.8's,
    which pyproject pins) run under the parent watcher; another Prefect version keeps its own.
    """
    import prefect
    from prefect.server.api import server

    cls = server.SubprocessASGIServer
    if prefect.__version__ != "3.8.8" or getattr(cls, "_moaa_watched", False):
        return

    def run_watched(self: server.SubprocessASGIServer) -> subprocess.Popen:
        from prefect.settings import get_current_settings

        from moaa.local.server import WATCHED_CHILD

        app = ["--app-dir", str(prefect.__module_path__.parent), "--factory", "prefect.server.api.server:create_app"]
        uvicorn = [*app, "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        return subprocess.Popen(
            args=[sys.executable, "-c", WATCHED_CHILD, str(os.getpid()), "uvicorn", *uvicorn],
            env={**os.environ, **env, **get_current_settings().to_environment_variables(exclude_unset=True)},
        )

    cls._run_uvicorn_command = run_watched
    cls._moaa_watched = True


def start_api_early() -> Callable[[], None]:
    """Set Prefect up and start its ephemeral API server in a thread, while the caller goes on
    (checks, imports, planning); returns `wait()`, which joins it and re-raises what failed.

    The flow's client then finds the server running and uses it (Prefect keeps one ephemeral server
    per process). Where PREFECT_API_URL names a server, that one is used and nothing is started.
    """
    failed: list[BaseException] = []

    def start() -> None:
        try:
            quiet_prefect()
            from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

            if not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value():
                from prefect.server.api.server import SubprocessASGIServer

                SubprocessASGIServer().start()
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=start, name="moaa-prefect-start", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait
