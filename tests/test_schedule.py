"""Schedules fire: a real Prefect server's scheduler creates the runs of a `* * * * *` deployment.

tests/test_deploy.py reads a schedule back and triggers runs by hand, so it cannot see a scheduler
that never schedules anything (prefect 3.8.8 with SQLAlchemy 2.1.x: `_insert_scheduled_flow_runs`
raises "Can't evaluate bulk DML statement" on every loop and no run is ever created). Here nothing
creates a flow run but the server: `prefect server start` (own PREFECT_HOME and sqlite database,
scheduler loops every few seconds) and `moaa deploy CONFIG --cron "* * * * *" --serve`, then we
wait until the server has scheduled runs, the served deployment has completed one of them and
that run wrote data set version v1 with rows.
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
from typing import Any

import httpx
import pytest
import yaml

from moaa.config import apply_override
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import ROOT, base_raw

PROMPTS = 2
DEPLOYMENT = "moaa-scheduled/test-run"  # the flow's name / the config's name
SCHEDULER_WINDOW_S = 90  # the scheduler must have created a run this long after registration
SQLALCHEMY_BUG = "Can't evaluate bulk DML statement"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pythonpath() -> str:
    """This checkout on the path, after whatever PYTHONPATH the test itself got (it must reach children)."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _errors(path: Path, limit: int = 15) -> str:
    """The server log's distinct error lines (the scheduler's traceback scrolls out of a tail)."""
    if not path.exists():
        return ""
    marks = ("Error", "error", "Exception", SQLALCHEMY_BUG)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    found = dict.fromkeys(line.strip() for line in lines if any(m in line for m in marks))
    return "\n".join(list(found)[-limit:])


class Logs:
    def __init__(self, server: Path, serve: Path):
        self.server, self.serve = server, serve

    def __str__(self) -> str:
        return (
            f"\n--- Prefect server log errors ({self.server}) ---\n{_errors(self.server)}"
            f"\n--- Prefect server log tail ---\n{_tail(self.server)}"
            f"\n--- `moaa deploy --serve` log tail ({self.serve}) ---\n{_tail(self.serve)}"
        )


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w", encoding="utf-8") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
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


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PYTHONPATH=_pythonpath(),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",  # the scheduler logs "Scheduled N runs." at INFO
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="2",
    )
    return env


def _wait_healthy(url: str, proc: subprocess.Popen, logs: Logs, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the Prefect server exited with {proc.returncode}{logs}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        time.sleep(1)
    raise AssertionError(f"the Prefect server did not answer {url}/health within {timeout}s{logs}")


def _write_config(folder: Path, base_url: str) -> Path:
    raw = base_raw(folder, base_url)
    apply_override(raw, f"prompts.limit={PROMPTS}")
    path = folder / "every-minute.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _sft_rows(version: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in (version / "data" / "sft").glob("*.parquet"))


def _scheduler_runs(client: Any, deployment_id: Any) -> list:
    """Flow runs of the deployment that the server's scheduler created (none is created by hand here)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,  # prefect 3.8.8's own server rejects the default (`sort: null`)
        limit=200,
    )
    return [r for r in runs if r.auto_scheduled and r.created_by is not None and r.created_by.type == "SCHEDULE"]


def _sqlalchemy_version() -> str:
    """This interpreter's (the server gets the same interpreter and PYTHONPATH)."""
    import sqlalchemy

    return sqlalchemy.__version__


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_server_schedules_and_a_served_deployment_runs_it(tmp_path):
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    logs = Logs(tmp_path / "prefect-server.log", tmp_path / "moaa-serve.log")
    (tmp_path / "server-home").mkdir()
    (tmp_path / "serve-home").mkdir()
    started: list[subprocess.Popen] = []
    t0 = time.monotonic()
    try:
        with OpenAITestServer() as model_server:
            config = _write_config(tmp_path, model_server.base_url)
            server_cmd = [sys.executable, "-m", "prefect", *f"server start --host 127.0.0.1 --port {port}".split()]
            server = _start(server_cmd, _server_env(tmp_path / "server-home"), logs.server)
            started.append(server)
            _wait_healthy(api, server, logs)
            print(f"\nPrefect server healthy after {time.monotonic() - t0:.0f}s")

            serve_env = dict(
                os.environ,
                PYTHONPATH=_pythonpath(),
                PREFECT_HOME=str(tmp_path / "serve-home"),
                PREFECT_API_URL=api,
                PREFECT_RUNNER_POLL_FREQUENCY="2",
            )
            serve_cmd = [sys.executable, "-m", "moaa.cli", "deploy", str(config), "--cron", "* * * * *", "--serve"]
            serving = _start(serve_cmd, serve_env, logs.serve)
            started.append(serving)

            with temporary_settings(updates={PREFECT_API_URL: api}):
                from prefect.client.orchestration import get_client

                with get_client(sync_client=True) as client:

                    def alive() -> None:
                        assert server.poll() is None, f"the Prefect server exited with {server.returncode}{logs}"
                        assert serving.poll() is None, f"`moaa deploy --serve` exited with {serving.returncode}{logs}"

                    # the deployment is registered by the served process
                    deadline = time.monotonic() + 180
                    deployment = None
                    while deployment is None:
                        alive()
                        assert time.monotonic() < deadline, f"{DEPLOYMENT} was not registered within 180s{logs}"
                        try:
                            deployment = client.read_deployment_by_name(DEPLOYMENT)
                        except ObjectNotFound:
                            time.sleep(1)
                    assert [s.schedule.cron for s in deployment.schedules] == ["* * * * *"], deployment.schedules
                    registered = time.monotonic()
                    print(f"deployment registered after {registered - t0:.0f}s")

                    # (a) the server's scheduler creates runs by itself
                    scheduled: list = []
                    while not scheduled:
                        alive()
                        if time.monotonic() - registered > SCHEDULER_WINDOW_S:
                            bug = SQLALCHEMY_BUG in logs.server.read_text(encoding="utf-8", errors="replace")
                            pytest.fail(
                                f"SCHEDULES DO NOT FIRE: the Prefect server's scheduler created 0 scheduled runs for "
                                f"the '* * * * *' deployment {DEPLOYMENT} within {SCHEDULER_WINDOW_S}s. "
                                + (
                                    f"Its log has {SQLALCHEMY_BUG!r}: the prefect 3.8.8 + SQLAlchemy 2.1.x bug in "
                                    "_insert_scheduled_flow_runs; pin SQLAlchemy 2.0.x. "
                                    if bug
                                    else ""
                                )
                                + f"(SQLAlchemy here: {_sqlalchemy_version()}){logs}"
                            )
                        scheduled = _scheduler_runs(client, deployment.id)
                        time.sleep(1)
                    print(f"scheduler created {len(scheduled)} runs after {time.monotonic() - registered:.0f}s")
                    assert all(r.idempotency_key.startswith("scheduled ") for r in scheduled), scheduled

                    # (b) the served deployment executes one of them to COMPLETED
                    deadline = time.monotonic() + 300  # the first cron slot is at most 60 s away
                    completed = None
                    while completed is None:
                        alive()
                        runs = _scheduler_runs(client, deployment.id)
                        bad = [
                            r for r in runs if r.state is not None and r.state.is_final() and not r.state.is_completed()
                        ]
                        assert not bad, f"a scheduled run ended {bad[0].state.type.value}: {bad[0].state.message}{logs}"
                        completed = next((r for r in runs if r.state is not None and r.state.is_completed()), None)
                        assert completed or time.monotonic() < deadline, (
                            f"no scheduled run of {DEPLOYMENT} COMPLETED within 300s; states: "
                            f"{sorted({r.state_name for r in runs})}{logs}"
                        )
                        time.sleep(2)
                    print(f"scheduled run {completed.name} completed after {time.monotonic() - t0:.0f}s")
    finally:
        for proc in reversed(started):
            _stop(proc)

    assert completed.auto_scheduled and completed.deployment_id == deployment.id
    assert completed.expected_start_time is not None and completed.expected_start_time.second == 0
    # (c) that run wrote a new data set version with rows
    version = tmp_path / "data" / "test-run" / "v1"
    assert version.is_dir(), f"no data set version at {version}: {sorted(version.parent.glob('*'))}{logs}"
    rows = _sft_rows(version)
    assert rows == PROMPTS, f"{version} has {rows} SFT rows, expected {PROMPTS}{logs}"
    print(f"done in {time.monotonic() - t0:.0f}s")
