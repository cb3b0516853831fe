"""Prefect settings for CLI runs: a local API server, quiet logs, no tracebacks for user mistakes.

This is the thin integration module the style guide allows: it touches Prefect's logging and
settings and starts its API server, and is imported only by the CLI before a flow runs.

With no PREFECT_API_URL, Prefect would start its own ephemeral server (`SubprocessASGIServer`)
on a flow's first API call, as a child that a SIGKILL of moaa, or a Ctrl-C sent to moaa alone,
leaves running under PID 1. moaa runs the same app itself instead (LocalAPI), in a thread of its
own process, started when `moaa run` releases it: after the shards begun before the flow are
done (moaa.commands.run), so its start-up (~3 s of CPU, more when it creates its database) does
not compete with their calls. On a new database (a machine's first run), a short-lived child
creates it meanwhile (_DatabasePrep): its migrations and block registration, which cost this
process ~6 s of CPU and ~30 MiB kept to its end.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moaa.errors import MoaaError

_USER_ERRORS = (
    "MoaaError", "ConfigError", "InputError", "EndpointError", "FailureRateExceeded", "RunStopped", "StorageError",
    "FolderBusy", "DamagedFile", "StageMadeNothing", "DeadEndpoint",
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
    # The local API server's start (its migrations, on a new database) can pass 20 s on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    import prefect.logging.configuration  # noqa: F401 - sets up Prefect's handlers first

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(name).addFilter(_UserErrorFilter())


class LocalAPI:
    """Prefect's API server in a thread of this process, for a run with no PREFECT_API_URL.

    The app and settings Prefect's own ephemeral server runs (`create_app`, ephemeral: no UI, no
    services; see _server_app) under uvicorn, on a socket bound here to a free port, so no other
    process can take the port in between. In this process rather than as a child: a child held
    ~190-230 MiB, 160 MiB of it imports (Python, pydantic, most of Prefect) that this process has
    already; here the server adds ~100 MiB. Its log records go to a file that a failure names, not
    to the terminal; it stops with the process, however that ends (stop_api: before the exit).
    """

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.api_url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._failed: list[BaseException] = []
        self._handler: logging.Handler | None = None

    def start(self, timeout_s: float) -> LocalAPI:
        import socket

        import uvicorn

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.FileHandler(self.log_path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._route_logs()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.api_url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        try:
            app = _server_app()
        except Exception as exc:  # noqa: BLE001 - a settings or import error is a failure to name
            self._log_failure(exc)
            sock.close()
            raise MoaaError(self._failure(f"could not be made ({type(exc).__name__}: {exc})")) from None
        self._route_logs()  # again: create_app sets Prefect's logging up, with these loggers on the console
        config = uvicorn.Config(app, log_level="error", lifespan="on", log_config=None, loop="asyncio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="moaa-prefect-api", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self.stop()
                raise MoaaError(self._failure("did not start"))
            if time.monotonic() > deadline:
                self.stop()
                raise MoaaError(self._failure(f"did not answer within {timeout_s:.0f} s"))
            time.sleep(0.02)
        return self

    def _route_logs(self) -> None:
        for name in _SERVER_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [self._handler] if self._handler is not None else []
            logger.propagate = False

    def _serve(self, sock: Any) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits (SystemExit) when the app cannot start
            self._failed.append(exc)
            if not isinstance(exc, SystemExit):
                self._log_failure(exc)
        finally:
            sock.close()

    def _log_failure(self, exc: BaseException) -> None:
        logging.getLogger("uvicorn.error").error("Prefect's API server failed", exc_info=exc)

    def _tail(self) -> str:
        from moaa.local.server import log_tail

        if self._handler is not None:
            self._handler.flush()
        return log_tail(self.log_path)

    def _failure(self, what: str) -> str:
        tail = self._tail()
        return (
            f"Prefect's local API server {what}"
            + (f"; last log lines: {tail}" if tail else "")
            + f"; full log: {self.log_path}; or point PREFECT_API_URL at a running server (prefect server start)"
        )

    def stop(self) -> None:
        """Shut the server down (its lifespan ends, the database is closed); the log goes with a clean stop."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:  # at once: the flow is over, and its client's open connections need no wait
            server.should_exit = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        handler, self._handler = self._handler, None
        if handler is None:
            return
        for name in _SERVER_LOGGERS:
            logging.getLogger(name).removeHandler(handler)  # propagation stays off: no server record on the console
        handler.close()
        clean = server is not None and server.started and not self._failed and (thread is None or not thread.is_alive())
        if clean:
            self.log_path.unlink(missing_ok=True)  # a failure's log stays for the message that names it


_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "prefect.server")


def _server_app() -> Any:
    """Prefect's ephemeral API app with no `prefect.collections` loaded.

    At start-up the server's block auto-registration imports every installed Prefect integration
    first; here that is prefect-dask (for the Dask task runner), which pulls dask, distributed,
    numpy and tornado in: ~26 MiB and ~1 s of CPU, for no block type (prefect-dask defines none).
    Prefect's own block types are registered as before; an integration's blocks belong on a real
    server (PREFECT_API_URL). The Dask task runner still imports prefect-dask where it runs."""
    _no_collections()
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


def _no_collections() -> None:
    """Have Prefect load no `prefect.collections` entry point in this process (see _server_app)."""
    import prefect._internal.plugins.collections as collections

    if collections._collections is None:
        collections._collections = {}  # what load_prefect_collections() returns from now on


_local_api: LocalAPI | None = None


def ensure_api(
    timeout_s: float | None = None,
    decided: Callable[[bool], None] | None = None,
    released: threading.Event | None = None,
) -> str | None:
    """Make this process's Prefect client use a running API; start a LocalAPI when none is set.

    Where PREFECT_API_URL (environment or Prefect profile) names a server, that one is used and
    nothing starts; where ephemeral mode is off, Prefect's own behaviour is kept. Otherwise the
    local server's URL becomes this process's PREFECT_API_URL (and its children's, so a Dask
    worker reports to the same API). `decided(True)` is called as soon as it is known that a
    local server starts (False: none does); the server then starts once `released` is set.
    Returns the URL started, or None.
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

    timeout = timeout_s or float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    logs = moaa_home() / "logs"
    _drop_stale_logs(logs)
    if released is not None:  # something runs meanwhile: a new database is made beside it
        preparing = _DatabasePrep.start_if_new(logs)
        released.wait()
        if preparing is not None:
            preparing.wait(timeout)
    _local_api = LocalAPI(logs / f"prefect-api-{os.getpid()}.log").start(timeout)
    os.environ["PREFECT_API_URL"] = _local_api.api_url
    refresh_global_settings_context()
    return _local_api.api_url


class _DatabasePrep:
    """A new SQLite database for Prefect's local server made by a child process (prepare_database)
    while the shards begun before the flow run, so the server in this process starts on a ready
    one: migrating it here cost ~6 s of CPU after those shards and ~30 MiB (alembic, its ~150
    revision modules, every block type's import) held to the run's end, at its peak.

    The child runs at a lower CPU priority (nice 10) than the calls, in a session of its own: a
    Ctrl-C or a kill of moaa lets it finish (a half-migrated database is worse than a few seconds
    of a child). When it fails, the server migrates the database itself, as it does anyway for a
    database that exists; its log (kept then) says why."""

    def __init__(self, proc: Any, log_path: Path):
        self.proc, self.log_path = proc, log_path

    @classmethod
    def start_if_new(cls, logs: Path) -> _DatabasePrep | None:
        import subprocess
        import sys

        from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_DATABASE_MIGRATE_ON_START
        from sqlalchemy.engine import make_url

        url = make_url(str(PREFECT_API_DATABASE_CONNECTION_URL.value()))
        if url.get_backend_name() != "sqlite" or not PREFECT_API_DATABASE_MIGRATE_ON_START.value():
            return None
        if not url.database or ":memory:" in url.database or Path(url.database).exists():
            return None
        log_path = logs / f"prefect-db-{os.getpid()}.log"
        code = "from flows.prefect_env import prepare_database; prepare_database()"
        try:
            logs.mkdir(parents=True, exist_ok=True)
            with log_path.open("w", encoding="utf-8") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        except OSError as exc:  # no child: the server makes the database, as before
            logging.getLogger("moaa.run").debug("could not start the child making Prefect's database: %s", exc)
            log_path.unlink(missing_ok=True)
            return None
        return cls(proc, log_path)

    def wait(self, timeout_s: float) -> None:
        """Wait for the child (at most `timeout_s`); its log goes when it made the database."""
        import subprocess

        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None  # still running: the server's own migration waits on the database's lock
        if code == 0:
            self.log_path.unlink(missing_ok=True)
            return
        logging.getLogger("moaa.run").debug(
            "preparing Prefect's new database in a child failed (%s); the server prepares it itself; log %s",
            "still running" if code is None else f"exit {code}", self.log_path,
        )  # fmt: skip


def prepare_database() -> None:
    """Create or migrate the local server's database and register Prefect's block types, as the
    server's own start-up does (the same memo, so that start-up then skips them); for _DatabasePrep."""
    import asyncio

    os.nice(10)
    quiet_prefect()
    _no_collections()  # as _server_app: the same block registry, so the same memo hash
    from prefect.server.api.server import _memoize_block_auto_registration
    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration
    from prefect.settings import PREFECT_API_BLOCKS_REGISTER_ON_START

    async def prepare() -> None:
        db = provide_database_interface()
        await db.create_db()

        @_memoize_block_auto_registration
        async def add_block_types() -> None:
            if PREFECT_API_BLOCKS_REGISTER_ON_START.value():
                async with await db.session() as session:
                    await run_block_auto_registration(session=session)

        await add_block_types()

    asyncio.run(prepare())


def stop_api() -> None:
    """Stop the LocalAPI this process started, if any, while the interpreter still runs: at exit
    (atexit) its background workers find their thread pools shut down already and spin."""
    global _local_api
    api, _local_api = _local_api, None
    if api is not None:
        api.stop()
        os.environ.pop("PREFECT_API_URL", None)


def _drop_stale_logs(folder: Path, keep_s: float = 86400.0) -> None:
    """Remove the server logs of runs killed more than a day ago (a clean stop removes its own)."""
    for path in [*folder.glob("prefect-api-*.log"), *folder.glob("prefect-db-*.log")]:
        try:
            if time.time() - path.stat().st_mtime > keep_s:
                path.unlink()
        except OSError:
            pass


class EarlyAPI:
    """ensure_api in a thread, started at construction, while the caller goes on (imports, opening
    the run, its first calls). A local server starts once the caller releases it (release): it
    shares this process's CPU and GIL with the calls of the shards begun before it."""

    def __init__(self) -> None:
        self._failed: list[BaseException] = []
        self._local: bool | None = None
        self._decided = threading.Event()
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._start, name="moaa-prefect-start", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Let a local server start now (nothing to do where a server is used or none starts)."""
        self._released.set()

    def _start(self) -> None:
        try:
            ensure_api(decided=self._decide, released=self._released)
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
        """Release a local server's start, then wait until the API answers; re-raises what failed."""
        self.release()
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)  # in steps: a Ctrl-C meanwhile is raised here
        if self._failed:
            raise self._failed[0]


def start_api_early() -> EarlyAPI:
    """Set Prefect up and make its API ready (ensure_api) in a thread; see EarlyAPI."""
    return EarlyAPI()
