"""The moaa pipeline as a Prefect flow: SFT shards, then preference shards, then a data set version.

One Prefect task per stage-shard (hundreds of prompts) with async fan-out inside it; the logic
lives in moaa/ (moaa.work.run_plan, moaa.work.stage_shard, moaa.work.finishing). Run it with
`moaa run CONFIG`, which uses Prefect's local ephemeral API (no server needed), or deploy it on a
schedule with `moaa deploy`.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from moaa.config import MoaaConfig, load_config
from moaa.errors import MoaaError
from moaa.public import scrub_text
from moaa.work.finished import finished_plan
from moaa.work.finishing import finish_run, up_to_date_summary
from moaa.work.launch import OpenRun, StageRun, open_run
from moaa.work.outcome import check_endpoints, check_stage
from moaa.work.shard_result import ShardResult
from moaa.work.stage_shard import STAGES, RunStopped, ShardHooks, ShardJob, run_shard
from moaa.work.totals import collect

log = logging.getLogger("moaa.flow")


def _retry_unless_user_error(task, task_run, state) -> bool:
    """Retry a shard lost to an infrastructure fault, never one stopped by a MoaaError."""
    try:
        state.result()
    except MoaaError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


@task(
    name="stage-shard",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_unless_user_error,
)
def stage_shard(job: ShardJob, hooks: ShardHooks | None = None) -> ShardResult:
    """Run one shard of one stage (paths in, paths out: any worker can run it); returns its counts.

    The full result (with the shard's stats) is the shard's DONE file, which `collect` reads: the
    flow keeps every task's result until the stage ends, so a result must stay small.
    """
    from flows.rate_limits import use_prefect_rate_limits

    use_prefect_rate_limits(job.config)  # share an endpoint's rate across workers where `moaa-<endpoint>` exists
    return run_shard(job, hooks).without_stats()


def _run_stage(stage: str, opened: OpenRun) -> None:
    """Run a stage's unfinished shards as Prefect tasks; shards begun before the flow are joined."""
    if not opened.plan.shards.get(stage):
        return
    run = opened.take_early(stage) or StageRun.open(stage, opened)
    try:
        futures = [stage_shard.submit(job, run.hooks_for(job)) for job in run.jobs]
        try:
            for future in futures:
                future.result()  # raises the shard's error (a MoaaError stays one line for the CLI)
                if not run.in_process:  # in-process shards feed the progress display live (Progress.track)
                    run.stats.refresh()
        except BaseException as exc:
            run.stop.set()
            raise _first_cause(futures, exc) from None
    except BaseException:
        run.abandon()  # shards begun early that no task took
        raise
    finally:
        run.close()


def _first_cause(futures: list[Any], exc: BaseException) -> BaseException:
    """The error that stopped the stage: a shard's own (failure rate, refused key) over 'stopped'."""
    if not isinstance(exc, RunStopped):
        return exc
    for future in futures:
        error = future.result(raise_on_failure=False)
        if isinstance(error, BaseException) and not isinstance(error, RunStopped):
            return error
    return exc


def task_runner_for(config: MoaaConfig):
    """The Prefect task runner named by run.task_runner (threads, dask or ray)."""
    from flows.task_runners import make_task_runner

    return make_task_runner(config.run)


# The runs `moaa run` opened in this process (moaa.work.launch), by the run id the flow is called
# with: the flow runs on the open run instead of loading the config again.
_open_runs: dict[str, OpenRun] = {}


def run_flow(opened: OpenRun, config_path: str, overrides: list[str], publish: bool = False) -> dict:
    """Run `moaa_pipeline` in this process on a run `moaa run` opened. Prefect records the config's
    path and overrides as the flow run's parameters, scrubbed (they hold no key or URL credentials);
    the flow itself takes the open run by its id."""
    run_id = uuid.uuid4().hex
    _open_runs[run_id] = opened
    try:
        flow_fn = moaa_pipeline.with_options(task_runner=task_runner_for(opened.config))
        shown = [scrub_text(item) for item in overrides]
        return flow_fn(scrub_text(config_path), shown, publish=publish, run_id=run_id)
    finally:
        _open_runs.pop(run_id, None)


@flow(name="moaa-pipeline", log_prints=True)
def moaa_pipeline(
    config_path: str,
    overrides: list[str] | None = None,
    publish: bool = False,
    artifact: bool = True,
    run_id: str | None = None,
) -> dict:
    """Generate SFT (and preference) data for CONFIG and write a new data set version (`artifact`: and
    post its summary and report as this flow run's artifact; a scheduled run posts it on its own).

    `run_id`: the run `moaa run` opened in this process (run_flow); without it (a deployment, a
    schedule, a direct call) the config is loaded here and the run opened here."""
    from prefect.runtime import deployment

    if run_id is not None:
        opened = _open_runs.get(run_id)
        if opened is None:
            raise MoaaError(
                f"flow run for run {run_id}: that run is not open in this process (a flow run of `moaa run` "
                "cannot be retried elsewhere); run the same `moaa run` command again to resume"
            )
        return run_pipeline(opened.config, base_dir=Path.cwd(), publish=publish, opened=opened, artifact=artifact)
    config = load_config(config_path, overrides)
    # A scheduled run that overlaps the previous one waits for it (and then finds its shards done);
    # a run from a terminal is refused at once, naming the run in the way.
    scheduled = deployment.id is not None
    return run_pipeline(config, base_dir=Path.cwd(), publish=publish, wait_for_lock=scheduled, artifact=artifact)


def run_pipeline(
    config: MoaaConfig,
    base_dir: Path | None = None,
    publish: bool = False,
    wait_for_lock: bool = False,
    opened: OpenRun | None = None,
    artifact: bool = True,
) -> dict:
    """Run every stage and write the version; on `opened` (moaa run opened it before Prefect
    started, moaa.work.launch) or on a run opened here."""
    with nullcontext(opened) if opened is not None else open_run(config, base_dir, wait_for_lock) as run:
        finished = None if publish else finished_plan(run.config, run.plan.work_dir, run.plan.instructions_dir)
        if finished is not None:  # nothing new (a scheduled run): no version, and the flow run says so
            log.info("%s", finished.line())
            summary = up_to_date_summary(finished)
            if artifact:
                post_artifact(summary)
            return summary
        for stage in STAGES:
            _run_stage(stage, run)
            shards = run.plan.shards.get(stage, [])
            check_stage(stage, shards, run.config)  # made nothing: fail, write no version
            check_endpoints(stage, shards, run.config, run.started)  # an endpoint answered nothing: likewise
        totals = collect(run.plan)
        summary = finish_run(run.plan, totals, time.time() - run.started, publish=publish)
    if artifact:
        post_artifact(summary)
    return summary


def post_artifact(summary: dict) -> None:
    """The run's summary and report as a Markdown artifact of the current flow run (key moaa-<name>)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        from moaa.work.summary import format_summary

        markdown = "```\n" + format_summary(summary) + "\n```"
        if summary.get("version_path") and not summary.get("up_to_date"):
            from moaa.dataset.run_report import report_markdown_for_artifact

            markdown += "\n\n" + viewer_line(Path(summary["version_path"]))
            markdown += "\n\n" + report_markdown_for_artifact(Path(summary["version_path"]))
        create_markdown_artifact(
            markdown=markdown,
            key=f"moaa-{summary['name'].lower().replace('_', '-').replace('.', '-')}",
            description="moaa run summary",
        )
    except Exception as exc:  # noqa: BLE001 - an artifact is a convenience, never fatal
        log.debug("could not post the summary artifact: %s", exc)


def viewer_line(version: Path) -> str:
    """Where to look at the version: its page in `moaa view` (on the viewer's default port)."""
    from moaa.view.serving import DEFAULT_PORT, version_url

    ref = f"{version.parent.name}@{version.name}"
    url = version_url(version.parent.name, version.name)
    return f"Look at it before training: run `moaa view {ref}` here, then open [{url}]({url}) (port {DEFAULT_PORT})."
