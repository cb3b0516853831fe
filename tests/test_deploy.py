"""`moaa deploy`: a scheduled deployment on a real Prefect server, read back; runs write new versions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from moaa.config import apply_override
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import ROOT, base_raw
from tests.pipeline_helpers import files_holding, prefect_database_folder


def write_config(folder: Path, url: str = "http://127.0.0.1:9/v1", *overrides: str) -> Path:
    raw = base_raw(folder, url)
    for item in overrides:
        apply_override(raw, item)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nightly.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def cli(*args: str, api_url: str | None, timeout: float = 300, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_LOGGING_LEVEL="WARNING", **env_vars)
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    cmd = [sys.executable, "-m", "moaa.cli", "deploy", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def read_deployment(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_cli_creates_the_scheduled_deployment(tmp_path, prefect_harness):
    config = write_config(tmp_path)
    done = cli(str(config), "--cron", "0 3 * * *", "--publish", "--name", "nightly",
               "--set", "prompts.limit=2", api_url=api_url())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deployment 'moaa-scheduled/nightly'" in done.stdout
    found = read_deployment("moaa-scheduled/nightly")
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in found.schedules] == [("0 3 * * *", "UTC", True)]
    assert found.parameters == {"config_path": str(config.resolve()), "overrides": ["prompts.limit=2"], "publish": True}
    assert found.entrypoint == "flows.schedule.moaa_scheduled"
    assert found.tags == ["moaa"]


def test_redeploying_updates_the_schedule(tmp_path, prefect_harness):
    from flows import schedule as D

    params = D.deployment_parameters(write_config(tmp_path), [], False)
    first = D.register("update-me", params, "0 3 * * *")
    second = D.register("update-me", params, "30 4 * * 1", timezone="Europe/Paris")
    assert first == second
    info = D.describe(second)
    assert info["schedules"] == [{"cron": "30 4 * * 1", "timezone": "Europe/Paris", "active": True}]
    assert info["parameters"]["publish"] is False


@pytest.mark.parametrize(
    "args, api, message",
    [
        (("--cron", "every night"), True, "--cron 'every night'"),
        (("--cron", "0 3 * * *", "--timezone", "Mars/Olympus"), True, "--timezone 'Mars/Olympus'"),
        (("--cron", "0 3 * * *"), False, "moaa deploy needs a Prefect server"),
        (("--cron", "0 3 * * *", "--set", "sft.layers=0"), True, "sft.layers"),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path, prefect_harness, args, api, message):
    done = cli(str(write_config(tmp_path)), *args, api_url=api_url() if api else None)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr


# one value per test run, the same in every pytest-xdist worker (they must collect the same test ids)
CANARY = f"pw-canary-{os.environ.get('PYTEST_XDIST_TESTRUNUID') or uuid.uuid4().hex}"


@pytest.mark.parametrize(
    "override, message",
    [
        (f"endpoints.test.base_url=http://me:{CANARY}@127.0.0.1:9/v1", "endpoints.test.base_url: holds credentials"),
        (f"endpoints.test.extra_body={{api_key: {CANARY}}}", "extra_body.api_key: looks like a key, token or password"),
        (f"endpoints.test.extra_body={{user: sk-{CANARY}}}", "extra_body.user: looks like a key, token or password"),
        (f"description=see {CANARY}", "--set description: holds the value of $MOAA_DEPLOY_KEY"),
        (f"description=https://u:{CANARY}@example.com", "--set description: holds credentials in a URL"),
    ],
)
def test_deploy_refuses_secrets_and_stores_none(tmp_path, prefect_harness, override, message):
    """A secret in an override never reaches the terminal or Prefect's database (deployments, runs)."""
    name = f"leak-{uuid.uuid4().hex[:8]}"
    known = {"MOAA_DEPLOY_KEY": CANARY} if "$MOAA_DEPLOY_KEY" in message else {}  # a key moaa would read
    done = cli(str(write_config(tmp_path)), "--cron", "0 3 * * *", "--name", name, "--set", override,
               api_url=api_url(), **known)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert CANARY not in done.stdout + done.stderr
    assert files_holding(prefect_database_folder(), [CANARY.encode()]) == []
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ObjectNotFound):
        read_deployment(f"moaa-scheduled/{name}")


@pytest.mark.slow
def test_a_scheduled_run_with_nothing_new_writes_no_version(tmp_path, prefect_harness):
    from flows.schedule import moaa_scheduled

    with OpenAITestServer() as server:
        config = write_config(tmp_path, server.base_url)
        first = moaa_scheduled(str(config), ["prompts.limit=2"], False)
        second = moaa_scheduled(str(config), ["prompts.limit=2"], False)
    assert first["version"] == "v1" and second["up_to_date"] and second["version"] == "v1"
    assert second["this_run"]["calls"] == 0 and second["stages"]["sft"]["rows"] == 2  # v1's own figures
    assert second["line"].startswith("up to date: ") and not (tmp_path / "data" / "test-run" / "v2").exists()


@pytest.mark.slow
def test_served_deployment_executes_a_run(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    with OpenAITestServer() as server:
        config = write_config(tmp_path, server.base_url, "prompts.limit=2")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_API_URL=api_url(), PREFECT_RUNNER_POLL_FREQUENCY="1")
        cmd = [sys.executable, "-m", "moaa.cli", "deploy", str(config), "--cron", "0 3 * * *", "--serve"]
        serving = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)  # fmt: skip
        try:
            deployment = _wait_for_deployment("moaa-scheduled/test-run", serving)
            with get_client(sync_client=True) as client:
                run = client.create_flow_run_from_deployment(deployment.id)
                state = _wait_for_final_state(client, run.id, serving)
        finally:
            os.killpg(serving.pid, signal.SIGINT)
            out = serving.communicate(timeout=60)[0]
    assert state.is_completed(), out
    versions = sorted(p.name for p in (tmp_path / "data" / "test-run").glob("v*"))
    assert versions == ["v1"]


def _wait_for_deployment(name: str, proc: subprocess.Popen, timeout: float = 180):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            return read_deployment(name)
        except ObjectNotFound:
            time.sleep(0.5)
    raise AssertionError(f"{name} was not registered within {timeout}s")


def _wait_for_final_state(client, run_id, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish within {timeout}s")


def test_deploy_to_a_process_work_pool(tmp_path, prefect_harness):
    missing = cli(str(write_config(tmp_path)), "--cron", "0 3 * * *", "--work-pool", "nope", api_url=api_url())
    assert "error: --work-pool 'nope': no such work pool" in missing.stderr
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="moaa-pool", type="process"))
        except ObjectAlreadyExists:
            pass
    config = write_config(tmp_path)
    done = cli(str(config), "--cron", "0 3 * * *", "--work-pool", "moaa-pool", "--name", "pooled", api_url=api_url())
    assert done.returncode == 0, done.stderr
    assert "prefect worker start --pool moaa-pool" in done.stdout
    found = read_deployment("moaa-scheduled/pooled")
    assert found.work_pool_name == "moaa-pool"
    assert found.entrypoint == "flows.schedule.moaa_scheduled"
    assert found.job_variables == {"working_dir": str(ROOT)}
    assert [s.schedule.cron for s in found.schedules] == ["0 3 * * *"]
    assert found.parameters["config_path"] == str(config.resolve())
