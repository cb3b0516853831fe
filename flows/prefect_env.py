"""Prefect settings for CLI runs: a local API server, quiet logs, no tracebacks for user mistakes.

This is the thin integration module the style guide allows: it touches Prefect's logging and
settings and starts its API server, and is imported only by the CLI before a flow runs.

With no PREFECT_API_URL, Prefect would start its own ephemeral server (`SubprocessASGIServer`)
on a flow's first API call: after importing the server's code into this process (~3 s, ~80 MiB),
and as a child that a SIGKILL of moaa, or a Ctrl-C sent to moaa alone, leaves running under PID 1.
moaa starts the same server itself instead (LocalAPI): early, in a thread, without that import,
under the parent watcher of the local model server (moaa.local.server.WATCHED_CHILD).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class LocalAPI:
    """Prefect's API server as this process's child, for a run with no PREFECT_API_URL.

    The same app and settings Prefect's own ephemeral server runs (`prefect.server.api.server:
    create_app` under uvicorn, services off; see server_app), started without importing the server's code here:
    that import alone costs ~3 s of CPU and ~80 MiB in the moaa process. It runs under the parent
    watcher (moaa.local.server.WATCHED_CHILD), so it exits when moaa dies any way (kill -9, a
    Ctrl-C sent to moaa alone), and its output goes to a log file that a failure names.
    """

    def __init__(self, port: int, log_path: Path):
        self.port, self.log_path = port, log_path
        self.api_url = f"http://127.0.0.1:{port}/api"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float) -> LocalAPI:
        import importlib.util

        from moaa.local.server import WATCHED_CHILD

        spec = importlib.util.find_spec("prefect")
        app_dir = str(Path(spec.origin).parent.parent) if spec and spec.origin else "."
        uvicorn = ["--app-dir", app_dir, "--factory", "flows.prefect_env:server_app", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env |= {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", WATCHED_CHILD, str(os.getpid()), "uvicorn", *uvicorn],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        atexit.register(self.stop)
        self._wait_healthy(timeout_s)
        return self

    def _wait_healthy(self, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll() if self._proc else None
            if code is not None:
                if code == 3 and "address already in use" in self._tail().lower():
                    raise PortTaken()  # taken between choosing and binding it: another port
                raise MoaaError(self._failure(f"exited with code {code}"))
            try:
                with urllib.request.urlopen(self.api_url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise MoaaError(self._failure(f"did not answer within {timeout_s:.0f} s"))

    def _tail(self) -> str:
        from moaa.local.server import log_tail

        return log_tail(self.log_path)

    def _failure(self, what: str) -> str:
        tail = self._tail()
        return (
            f"Prefect's local API server (port {self.port}) {what}"
            + (f"; last log lines: {tail}" if tail else "")
            + f"; full log: {self.log_path}; or point PREFECT_API_URL at a running server (prefect server start)"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.returncode in (0, -signal.SIGTERM, -signal.SIGKILL):
            self.log_path.unlink(missing_ok=True)  # a failure's log stays for the message that names it


def server_app() -> Any:
    """The app LocalAPI's child serves: Prefect's `create_app` with no `prefect.collections` loaded.

    At start-up the server's block auto-registration imports every installed Prefect integration
    first; here that is prefect-dask (for the Dask task runner), which pulls dask, distributed,
    numpy and tornado into the server: ~26 MiB of its memory and ~1 s of CPU taken from the run's
    first calls, for no block type (prefect-dask defines none). Prefect's own block types are
    registered as before; an integration's blocks belong on a real server (PREFECT_API_URL)."""
    import prefect._internal.plugins.collections as collections

    if collections._collections is None:
        collections._collections = {}  # what load_prefect_collections() returns from now on
    from prefect.server.api.server import create_app

    return create_app()


class PortTaken(Exception):
    """The port was taken between choosing and binding it (uvicorn's exit code 3, 'address already in use')."""


_local_api: LocalAPI | None = None


def ensure_api(timeout_s: float | None = None, decided: Callable[[bool], None] | None = None) -> str | None:
    """Make this process's Prefect client use a running API; start a LocalAPI when none is set.

    Where PREFECT_API_URL (environment or Prefect profile) names a server, that one is used and
    nothing starts; where ephemeral mode is off, Prefect's own behaviour is kept. Otherwise the
    local server's URL becomes this process's PREFECT_API_URL (and its children's, so a Dask
    worker reports to the same API). `decided(True)` is called as soon as it is known that a
    local server starts (False: none does). Returns the URL started, or None.
    """
    global _local_api
    quiet_prefect()
    from prefect.context import refresh_global_settings_context
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    starts = _local_api is None and not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value()
    if decided is not None:
        decided(bool(starts or _local_api is not None))
    if _local_api is not None:
        return _local_api.api_url
    if not starts:
        return None
    from moaa.local.model import moaa_home
    from moaa.local.server import free_port

    timeout = timeout_s or float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    _drop_stale_logs(moaa_home() / "logs")
    for _ in range(5):
        api = LocalAPI(free_port(), moaa_home() / "logs" / f"prefect-api-{os.getpid()}.log")
        try:
            _local_api = api.start(timeout)
            break
        except PortTaken:
            continue
    else:
        raise MoaaError("could not find a free port for Prefect's local API server; set PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = _local_api.api_url
    refresh_global_settings_context()
    return _local_api.api_url


def _drop_stale_logs(folder: Path, keep_s: float = 86400.0) -> None:
    """Remove the server logs of runs killed more than a day ago (a clean stop removes its own)."""
    for path in folder.glob("prefect-api-*.log"):
        try:
            if time.time() - path.stat().st_mtime > keep_s:
                path.unlink()
        except OSError:
            pass


class EarlyAPI:
    """ensure_api in a thread, started at construction, while the caller goes on (imports, opening
    the run, its first calls)."""

    def __init__(self) -> None:
        self._failed: list[BaseException] = []
        self._local: bool | None = None
        self._decided = threading.Event()
        self._thread = threading.Thread(target=self._start, name="moaa-prefect-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            ensure_api(decided=self._decide)
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the caller's thread
            self._failed.append(exc)
        finally:
            self._decided.set()

    def _decide(self, local: bool) -> None:
        self._local = local
        self._decided.set()

    def local(self) -> bool:
        """True when the API is a server of this process's own (no PREFECT_API_URL was set)."""
        self._decided.wait()
        return bool(self._local)

    def wait(self) -> None:
        """Until the API answers; re-raises what failed."""
        self._thread.join()
        if self._failed:
            raise self._failed[0]


def start_api_early() -> EarlyAPI:
    """Set Prefect up and make its API ready (ensure_api) in a thread; see EarlyAPI."""
    return EarlyAPI()
