"""Scheduled runs: the pipeline flow as a Prefect deployment with a cron schedule (`moaa deploy`).

Three ways to run a deployment, none needs Docker:
- `moaa deploy CONFIG --cron "0 3 * * *"` registers (or updates) the deployment with the Prefect
  server at PREFECT_API_URL; `moaa deploy ... --serve` registers it and executes its scheduled
  runs in the foreground (Prefect's `serve`), from the current folder;
- `moaa deploy ... --work-pool POOL` deploys it to a `process` work pool instead, whose runs a
  `prefect worker start --pool POOL` executes (in the folder `moaa deploy` ran in).

Every run plans, generates and writes a new data set version (and publishes it when the
deployment was made with --publish: the flow's `publish` parameter), or, with nothing new to make
(prompts.schedule; an unchanged config), says "up to date" and writes none. moaa's log records
and progress lines go to the run's logs in Prefect (flows.run_logs) and its summary and report are
the run's artifact. The deployed flow is
`moaa-scheduled`: it runs `moaa-pipeline` as a subflow on the task runner the config names
(threads with run.max_parallel_shards, Dask or Ray), as `moaa run` does; a deployment of the bare
pipeline flow would use its decorator's default runner (an unbounded thread pool) instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from flows.pipeline_flow import moaa_pipeline, task_runner_for
from moaa.config import load_config, refuse_stored_secrets
from moaa.errors import ConfigError, MoaaError

log = logging.getLogger("moaa.flow")

FLOW_NAME = "moaa-scheduled"


@flow(name=FLOW_NAME, log_prints=True)
def moaa_scheduled(config_path: str, overrides: list[str] | None = None, publish: bool = False) -> dict:
    """One scheduled run: the moaa pipeline for CONFIG on the task runner its config names; moaa's
    log records and progress lines go to this flow run's logs, and the run report is its artifact."""
    from flows.pipeline_flow import post_artifact
    from flows.run_logs import flow_run_logs

    runner = task_runner_for(load_config(config_path, overrides))
    with flow_run_logs():
        summary = moaa_pipeline.with_options(task_runner=runner)(config_path, overrides, publish, artifact=False)
        log.info("%s", summary.get("line") or f"wrote {summary.get('version_path')}")
    post_artifact(summary)  # on this run, the deployment's, not on its moaa-pipeline subflow
    return summary


def deployment_parameters(config_path: str | Path, overrides: list[str], publish: bool) -> dict[str, Any]:
    """The flow parameters every scheduled run gets (the config by absolute path, validated now).

    Prefect stores them in its database and shows them in its UI, and each run needs them as given:
    an override holding a secret is refused (it cannot be scrubbed without changing the run)."""
    refuse_stored_secrets(overrides)
    path = Path(config_path).resolve()
    load_config(path, overrides)  # a broken config fails here, not at 3 a.m.
    return {"config_path": str(path), "overrides": list(overrides), "publish": publish}


def cron_schedule(cron: str, timezone: str = "UTC"):
    """A Prefect cron schedule; a ConfigError naming --cron when the expression does not parse."""
    from zoneinfo import ZoneInfo

    from prefect.schedules import Cron

    try:
        ZoneInfo(timezone)  # Prefect checks the time zone only when the deployment is built
        return Cron(cron, timezone=timezone)
    except Exception as exc:  # noqa: BLE001 - pydantic/croniter raise various types
        reason = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
        raise ConfigError(f"--cron {cron!r} / --timezone {timezone!r}: {reason} (e.g. --cron '0 3 * * *')") from None


def require_api_url() -> str:
    """The Prefect server's URL; a one-line error when none is set (schedules need a real server)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise MoaaError(
            "moaa deploy needs a Prefect server: run `prefect server start`, then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect config set PREFECT_API_URL=...`)"
        )
    return url


def build_deployment(
    name: str, parameters: dict[str, Any], cron: str, timezone: str = "UTC", paused: bool = False,
    work_pool: str | None = None,
):  # fmt: skip
    """A RunnerDeployment of `moaa-scheduled`, loaded by module path (moaa is installed where it runs).

    For a work pool, runs start in the current folder (job variable `working_dir`), so relative
    paths in the config mean what they mean to `moaa run` here.
    """
    from prefect.deployments.runner import EntrypointType

    return moaa_scheduled.to_deployment(
        name=name,
        schedules=[cron_schedule(cron, timezone)],
        parameters=parameters,
        paused=paused,
        description=f"moaa: a new data set version from {parameters['config_path']} on '{cron}' ({timezone})",
        tags=["moaa"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        work_pool_name=work_pool,
        job_variables={"working_dir": str(Path.cwd())} if work_pool else None,
    )


def register(name: str, parameters: dict[str, Any], cron: str, timezone: str = "UTC", paused: bool = False) -> str:
    """Create or update the deployment on the server; returns its id."""
    require_api_url()
    return str(build_deployment(name, parameters, cron, timezone, paused).apply())


def serve(name: str, parameters: dict[str, Any], cron: str, timezone: str = "UTC") -> None:
    """Register the deployment and execute its scheduled runs here until Ctrl-C (Prefect's serve)."""
    from prefect import serve as prefect_serve

    require_api_url()
    prefect_serve(build_deployment(name, parameters, cron, timezone), print_starting_message=True)


def deploy_to_pool(name: str, parameters: dict[str, Any], cron: str, work_pool: str, timezone: str = "UTC") -> str:
    """Deploy to a work pool (type `process`: a `prefect worker start --pool POOL` runs it); returns its id.

    Applied directly rather than with `Flow.deploy` (whose worker lookup sends `limit: null`, which
    prefect 3.8.8's server refused with a 422 under fastapi >= 0.151; the lock pins 0.150.0): one
    request, and a missing pool is one line naming the command that makes it.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    require_api_url()
    try:
        with get_client(sync_client=True) as client:
            client.read_work_pool(work_pool)
    except ObjectNotFound:
        raise MoaaError(
            f"--work-pool {work_pool!r}: no such work pool; create it with `prefect work-pool create {work_pool} "
            "--type process`"
        ) from None
    deployment = build_deployment(name, parameters, cron, timezone, work_pool=work_pool)
    return str(deployment.apply(work_pool_name=work_pool))


def describe(deployment_id: str) -> dict[str, Any]:
    """What the server holds for a deployment: name, schedules (cron, timezone, active), parameters."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployment(UUID(deployment_id))
    schedules = [
        {"cron": s.schedule.cron, "timezone": s.schedule.timezone, "active": s.active} for s in found.schedules
    ]
    return {
        "id": str(found.id),
        "name": f"{FLOW_NAME}/{found.name}",
        "schedules": schedules,
        "parameters": found.parameters,
        "work_pool": found.work_pool_name,
    }
