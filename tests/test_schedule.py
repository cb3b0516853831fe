"""Schedules fire and make new data: a real Prefect server's scheduler creates the runs of a `* * * * *`
deployment that `moaa deploy --serve` executes, and Prefect shows them as its users expect.

tests/test_deploy.py reads a schedule back and triggers runs by hand, so it cannot see a scheduler
that never schedules anything (prefect 3.8.8 with SQLAlchemy 2.1.x: `_insert_scheduled_flow_runs`
raises "Can't evaluate bulk DML statement" on every loop and no run is ever created). Here nothing
creates the first flow run but the server: `prefect server start` (own PREFECT_HOME and sqlite
database, scheduler loops every few seconds) and `moaa deploy CONFIG --cron "* * * * *" --serve`;
we wait until the scheduler has created runs and the served deployment has completed one, which
wrote v1 from the first prompts of a `prompts.schedule: next` source. Then, on the same server:
the run's logs (moaa's lines) and its report artifact are the deployment's run's; a run triggered
through the API adds only the next prompts (v2); one more finds nothing new and writes no version;
a run cancelled through the API while its calls are in flight stops, the served process goes on,
and the same run again completes from where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from moaa.config import apply_override
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import base_raw
from tests.prefect_server import SQLALCHEMY_BUG, PrefectServer, start, stop, tail

PROMPTS = 2  # new prompts per run (prompts.limit with prompts.schedule: next)
SOURCE = 4  # prompts in the source
DEPLOYMENT = "moaa-scheduled/test-run"  # the flow's name / the config's name
SCHEDULER_WINDOW_S = 90  # the scheduler must have created a run this long after registration


def _write_config(folder: Path, base_url: str) -> Path:
    source = folder / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Question {i}: name {i} uses of a paperclip."}) + "\n"
                              for i in range(SOURCE)))  # fmt: skip
    raw = base_raw(folder, base_url)
    for item in (f"prompts.path={source}", f"prompts.limit={PROMPTS}", "prompts.schedule=next"):
        apply_override(raw, item)
    path = folder / "every-minute.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _sft_rows(version: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in (version / "data" / "sft").glob("*.parquet"))


def _scheduler_runs(client: Any, deployment_id: Any) -> list:
    """Flow runs of the deployment that the server's scheduler created (none is created by hand here)."""
    return [
        r
        for r in _runs(client, deployment_id)
        if r.auto_scheduled and getattr(r.created_by, "type", None) == "SCHEDULE"
    ]  # noqa: E501


def _runs(client: Any, deployment_id: Any) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort

    flow_runs = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    return client.read_flow_runs(flow_run_filter=flow_runs, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200)


def _sqlalchemy_version() -> str:
    """This interpreter's (the server gets the same interpreter and PYTHONPATH)."""
    import sqlalchemy

    return sqlalchemy.__version__


class Served:
    """The server, the `moaa deploy --serve` process and a Prefect client, with what a failure shows."""

    def __init__(self, server: PrefectServer, serving: Any, log: Path, client: Any):
        self.server, self.serving, self.log, self.client = server, serving, log, client

    def alive(self) -> None:
        self.server.check_alive()
        assert self.serving.poll() is None, f"`moaa deploy --serve` exited with {self.serving.returncode}{self}"

    def __str__(self) -> str:
        return f"{self.server}\n--- `moaa deploy --serve` log tail ({self.log}) ---\n{tail(self.log)}"

    def wait_state(self, run_id: Any, final: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            self.alive()
            run = self.client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                assert run.state.type.value == final, (
                    f"run {run.name} ended {run.state.type.value}: {run.state.message}{self}"
                )  # noqa: E501
                return run
            assert time.monotonic() < deadline, (
                f"run {run.name} not {final} within {timeout_s}s: {run.state_name}{self}"
            )
            time.sleep(1)

    def trigger(self, deployment_id: Any, **parameters: Any) -> Any:
        """A run of the deployment created through the API now (as `prefect deployment run` does)."""
        return self.client.create_flow_run_from_deployment(deployment_id, parameters=parameters or None)

    def logs(self, run_id: Any) -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        return [log.message for log in self.client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_server_schedules_a_served_deployment_that_makes_new_data_as_prefect_shows_it(tmp_path):
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    t0 = time.monotonic()
    serve_log = tmp_path / "moaa-serve.log"
    with (
        OpenAITestServer() as model_server,
        OpenAITestServer(latency_s=3.0) as slow_server,
        PrefectServer(tmp_path) as server,
    ):  # noqa: E501
        config = _write_config(tmp_path, model_server.base_url)
        print(f"\nPrefect server healthy after {time.monotonic() - t0:.0f}s")
        env = server.client_env(tmp_path / "serve-home", PREFECT_RUNNER_POLL_FREQUENCY="2")
        serve_cmd = [sys.executable, "-m", "moaa.cli", "deploy", str(config), "--cron", "* * * * *", "--serve"]
        serving = start(serve_cmd, env, serve_log)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api}):
                from prefect.client.orchestration import get_client

                with get_client(sync_client=True) as client:
                    served = Served(server, serving, serve_log, client)
                    # the deployment is registered by the served process
                    deadline = time.monotonic() + 180
                    deployment = None
                    while deployment is None:
                        served.alive()
                        assert time.monotonic() < deadline, f"{DEPLOYMENT} was not registered within 180s{served}"
                        try:
                            deployment = client.read_deployment_by_name(DEPLOYMENT)
                        except ObjectNotFound:
                            time.sleep(1)
                    assert [s.schedule.cron for s in deployment.schedules] == ["* * * * *"], deployment.schedules
                    registered = time.monotonic()

                    # (a) the server's scheduler creates runs by itself; the served deployment completes one
                    scheduled: list = []
                    while not scheduled:
                        served.alive()
                        if time.monotonic() - registered > SCHEDULER_WINDOW_S:
                            bug = SQLALCHEMY_BUG in server.log.read_text(encoding="utf-8", errors="replace")
                            pytest.fail(
                                f"SCHEDULES DO NOT FIRE: the Prefect server's scheduler created 0 scheduled runs for "
                                f"the '* * * * *' deployment {DEPLOYMENT} within {SCHEDULER_WINDOW_S}s. "
                                + (
                                    f"Its log has {SQLALCHEMY_BUG!r}: the prefect 3.8.8 + SQLAlchemy 2.1.x bug in "
                                    "_insert_scheduled_flow_runs; pin SQLAlchemy 2.0.x. "
                                    if bug
                                    else ""
                                )
                                + f"(SQLAlchemy here: {_sqlalchemy_version()}){served}"
                            )
                        scheduled = _scheduler_runs(client, deployment.id)
                        time.sleep(1)
                    print(f"scheduler created {len(scheduled)} runs after {time.monotonic() - registered:.0f}s")
                    assert all(r.idempotency_key.startswith("scheduled ") for r in scheduled), scheduled
                    completed = served.wait_state(scheduled[0].id, "COMPLETED", 300)
                    client.pause_deployment(deployment.id)  # from here on, runs are triggered through the API
                    print(f"scheduled run {completed.name} completed after {time.monotonic() - t0:.0f}s")
                    assert completed.auto_scheduled and completed.expected_start_time.second == 0
                    v1 = tmp_path / "data" / "test-run" / "v1"
                    assert v1.is_dir() and _sft_rows(v1) == PROMPTS, f"{v1}{served}"

                    # (b) its logs hold moaa's lines, and the run report is the deployment run's artifact
                    logs = served.logs(completed.id)
                    assert any(m.startswith("[sft] ") for m in logs), f"no moaa progress line in {logs}{served}"
                    assert any(m == f"wrote {v1}" for m in logs), logs
                    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

                    mine = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[completed.id]))
                    artifacts = client.read_artifacts(artifact_filter=mine)
                    assert [a.key for a in artifacts] == ["moaa-test-run"] and "## " in artifacts[0].data

                    # (c) the next run adds only the next prompts; (d) then nothing is new: no version
                    second = served.wait_state(served.trigger(deployment.id).id, "COMPLETED", 180)
                    v2 = tmp_path / "data" / "test-run" / "v2"
                    manifest = json.loads((v2 / "moaa_manifest.json").read_text())
                    assert _sft_rows(v2) == 2 * PROMPTS and manifest["prompts_added"]["count"] == PROMPTS
                    assert manifest["prompts_added"]["parent"] == "test-run@v1"
                    third = served.wait_state(served.trigger(deployment.id).id, "COMPLETED", 180)
                    assert any(m.startswith(f"up to date: {v2}") for m in served.logs(third.id)), served.logs(third.id)
                    assert not (tmp_path / "data" / "test-run" / "v3").exists()
                    print(f"v2 by {second.name}, nothing new for {third.name} after {time.monotonic() - t0:.0f}s")

                    # (e) a run cancelled through the API while its calls are in flight stops cleanly
                    slow = {"config_path": str(config), "overrides": [
                        f"endpoints.test.base_url={slow_server.base_url}", "prompts.schedule=all",
                        "prompts.limit=null", "name=slow-run", "cache.enabled=false"], "publish": False}  # fmt: skip
                    cancelled = served.trigger(deployment.id, **slow)
                    deadline = time.monotonic() + 120
                    while not any(r["path"] == "/v1/chat/completions" for r in slow_server.requests):
                        served.alive()
                        assert time.monotonic() < deadline, f"the slow run sent no call within 120s{served}"
                        time.sleep(0.5)
                    from prefect.states import Cancelling

                    client.set_flow_run_state(cancelled.id, Cancelling(), force=True)
                    served.wait_state(cancelled.id, "CANCELLED", 90)
                    served.alive()  # the served process goes on serving
                    assert not (tmp_path / "data" / "slow-run").exists()
                    again = served.wait_state(served.trigger(deployment.id, **slow).id, "COMPLETED", 300)
                    print(f"cancelled {cancelled.name}, then {again.name} completed after {time.monotonic() - t0:.0f}s")
                    slow_v1 = tmp_path / "data" / "slow-run" / "v1"
                    assert _sft_rows(slow_v1) == SOURCE
        finally:
            stop(serving)
    print(f"done in {time.monotonic() - t0:.0f}s")
