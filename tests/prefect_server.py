"""A real `prefect server start` for tests (its own PREFECT_HOME and SQLite database, scheduler on):
what a user runs for schedules, served deployments and Prefect's own CLI.

    with PrefectServer(tmp_path) as server:   # server.api: http://127.0.0.1:PORT/api
        proc = start(cmd, server.client_env(home), log)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT

SQLALCHEMY_BUG = "Can't evaluate bulk DML statement"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pythonpath() -> str:
    """This checkout on the path, after whatever PYTHONPATH the test itself got (it must reach children)."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def errors(path: Path, limit: int = 15) -> str:
    """A log's distinct error lines (a traceback scrolls out of a tail)."""
    if not path.exists():
        return ""
    marks = ("Error", "error", "Exception", SQLALCHEMY_BUG)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    found = dict.fromkeys(line.strip() for line in lines if any(m in line for m in marks))
    return "\n".join(list(found)[-limit:])


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    with log.open("w", encoding="utf-8") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGINT the process's session (it and the runs it started), then SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
            if sig == signal.SIGINT:  # the leader is gone; make sure its children are too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return


class PrefectServer:
    """`python -m prefect server start` on a free port with its own home; `api` once healthy."""

    def __init__(self, folder: Path, timeout_s: float = 180):
        self.folder, self.timeout_s = folder, timeout_s
        self.home = folder / "server-home"
        self.log = folder / "prefect-server.log"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PYTHONPATH=pythonpath(),
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            PREFECT_LOGGING_LEVEL="INFO",  # the scheduler logs "Scheduled N runs." at INFO
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
            PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="2",
        )
        return env

    def client_env(self, home: Path, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server (its own PREFECT_HOME)."""
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PYTHONPATH=pythonpath(), PREFECT_HOME=str(home), PREFECT_API_URL=self.api, **extra)
        return env

    def __enter__(self) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = start(cmd, self.env(), self.log)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api}/health", timeout=5).status_code == 200:
                    return self
            time.sleep(1)
        self.__exit__()
        raise AssertionError(f"the Prefect server did not answer {self.api}/health within {self.timeout_s}s{self}")

    def check_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"the Prefect server exited{self}"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)

    def __str__(self) -> str:
        return f"\n--- Prefect server log errors ({self.log}) ---\n{errors(self.log)}\n--- tail ---\n{tail(self.log)}"
