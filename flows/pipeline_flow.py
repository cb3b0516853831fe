"""The moaa pipeline as a Prefect flow: SFT shards, then preference shards, then a data set version.

One Prefect task per stage-shard (hundreds of prompts) with async fan-out inside it; the logic
lives in moaa/ (moaa.work.steps, moaa.work.stage_shard). Run it with `moaa run CONFIG`, which uses Prefect's
local ephemeral API (no server needed), or deploy it on a schedule with `moaa deploy`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from moaa.config import MoaaConfig, check_environment, dump_config, load_config
from moaa.errors import MoaaError
from moaa.locks import FolderLock
from moaa.models.session import local_endpoints
from moaa.public import install_log_scrubber, scrub_text
from moaa.work import steps as P
from moaa.work.outcome import check_stage
from moaa.work.progress import Progress
from moaa.work.shard_result import ShardResult
from moaa.work.shards import read_done
from moaa.work.stage_shard import STAGES, RunStopped, run_shard

log = logging.getLogger("moaa.flow")
BUSY_ADVICE = "wait for that run to finish (or stop it), then run the same command again to resume"


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
def stage_shard(
    stage: str, config: dict, shard: str, out: str, roles: list[str] | None, progress: Any, stop: Any = None
) -> ShardResult:
    """Run one shard of one stage (paths in, paths out: any worker can run it); returns its counts.

    The full result (with the shard's stats) is the shard's DONE file, which `collect` reads: the
    flow keeps every task's result until the stage ends, so a result must stay small.
    """
    from flows.rate_limits import use_prefect_rate_limits

    use_prefect_rate_limits(config)  # share an endpoint's rate across workers where `moaa-<endpoint>` exists
    return run_shard(stage, config, shard, out, roles=roles, progress=progress, stop=stop).without_stats()


def _run_stage(stage: str, plan: P.RunPlan, config: MoaaConfig, roles: list[str] | None) -> None:
    shards = plan.shards.get(stage, [])
    if not shards:
        return
    in_process = config.run.task_runner == "threads"
    stats_view = _LiveStats(plan, stage)
    stop = threading.Event()  # Ctrl-C or a run-fatal shard error: the other in-process shards stop too
    shards, done_before = _unfinished(shards)
    with Progress(stage, plan.total(stage), stats_view.stats, interval_s=10.0, done_before=done_before) as progress:
        futures = [
            stage_shard.submit(
                stage,
                dump_config(config),
                str(inp),
                str(out),
                roles,
                progress if in_process else None,
                stop if in_process else None,
            )  # fmt: skip
            for inp, out in shards
        ]
        try:
            for future in futures:
                future.result()  # raises the shard's error (a MoaaError stays one line for the CLI)
                if not in_process:  # in-process shards feed the progress display live (Progress.track)
                    stats_view.refresh()
        except BaseException as exc:
            stop.set()
            raise _first_cause(futures, exc) from None


def _unfinished(shards: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], int]:
    """The shards still to run, and the prompts of those already DONE (no task: `collect` reads them)."""
    todo, done_prompts = [], 0
    for inp, out in shards:
        done = read_done(out)
        if done is None:
            todo.append((inp, out))
        else:
            done_prompts += done.counts.prompts
    return todo, done_prompts


def _first_cause(futures: list[Any], exc: BaseException) -> BaseException:
    """The error that stopped the stage: a shard's own (failure rate, refused key) over 'stopped'."""
    if not isinstance(exc, RunStopped):
        return exc
    for future in futures:
        error = future.result(raise_on_failure=False)
        if isinstance(error, BaseException) and not isinstance(error, RunStopped):
            return error
    return exc


class _LiveStats:
    """Run totals for the progress line, from the shards finished so far plus live counters."""

    def __init__(self, plan: P.RunPlan, stage: str, every_s: float = 10.0):
        self.plan, self.stage, self.every_s = plan, stage, every_s
        self.stats = P.collect(plan)["stats"]
        self._last = time.monotonic()

    def refresh(self) -> None:
        # Re-reading every DONE file costs O(shards): at most once per interval, not once per shard.
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        fresh = P.collect(self.plan)["stats"]
        self.stats.endpoints, self.stats.tags, self.stats.latencies = fresh.endpoints, fresh.tags, fresh.latencies


def task_runner_for(config: MoaaConfig):
    """The Prefect task runner named by run.task_runner (threads, dask or ray)."""
    from flows.task_runners import make_task_runner

    return make_task_runner(config.run)


# Overrides as this process gave them, by their scrubbed spelling (run_flow): Prefect stores a flow
# run's parameters in its database, so the flow is called with the scrubbed ones.
_held_overrides: dict[tuple[str, ...], list[str]] = {}


def run_flow(config: MoaaConfig, config_path: str, overrides: list[str], publish: bool = False) -> dict:
    """Run `moaa_pipeline` in this process; its stored parameters hold no key or URL credentials."""
    shown = [scrub_text(item) for item in overrides]
    _held_overrides[tuple(shown)] = list(overrides)
    try:
        flow_fn = moaa_pipeline.with_options(task_runner=task_runner_for(config))
        return flow_fn(scrub_text(config_path), shown, publish=publish)
    finally:
        _held_overrides.pop(tuple(shown), None)


@flow(name="moaa-pipeline", log_prints=True)
def moaa_pipeline(config_path: str, overrides: list[str] | None = None, publish: bool = False) -> dict:
    """Generate SFT (and preference) data for CONFIG and write a new data set version."""
    from prefect.runtime import deployment

    overrides = _held_overrides.get(tuple(overrides or ()), overrides)
    config = load_config(config_path, overrides)
    # A scheduled run that overlaps the previous one waits for it (and then finds its shards done);
    # a run from a terminal is refused at once, naming the run in the way.
    scheduled = deployment.id is not None
    return run_pipeline(config, base_dir=Path.cwd(), publish=publish, wait_for_lock=scheduled)


def run_pipeline(
    config: MoaaConfig, base_dir: Path | None = None, publish: bool = False, wait_for_lock: bool = False
) -> dict:
    install_log_scrubber()  # deployments and workers too, not only the CLI
    check_environment(config)
    started = time.time()
    plan = P.plan_run(config, base_dir=base_dir)
    # One run per work folder: a second run of this config (an overlapping schedule, a second
    # terminal) is refused naming the first, instead of asking and writing every prompt twice.
    with FolderLock(plan.work_dir, "work folder").hold(wait=wait_for_lock, advice=BUSY_ADVICE):
        plan.earlier_failures = P.reopen_earlier_failures(plan)
        with local_endpoints(config, plan.work_dir) as resolved:
            roles = P.run_roles(resolved, plan)
            for stage in STAGES:
                _run_stage(stage, plan, resolved, roles if stage == "sft" else None)
                check_stage(stage, plan.shards.get(stage, []), resolved)  # made nothing: fail, write no version
        totals = P.collect(plan)
        summary = P.finish_run(plan, totals, time.time() - started, publish=publish)
    _post_artifact(summary)
    return summary


def _post_artifact(summary: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        from moaa.work.summary import format_summary

        markdown = "```\n" + format_summary(summary) + "\n```"
        if summary.get("version_path"):
            from moaa.dataset.run_report import report_markdown_for_artifact

            markdown += "\n\n" + report_markdown_for_artifact(Path(summary["version_path"]))
        create_markdown_artifact(
            markdown=markdown,
            key=f"moaa-{summary['name'].lower().replace('_', '-').replace('.', '-')}",
            description="moaa run summary",
        )
    except Exception as exc:  # noqa: BLE001 - an artifact is a convenience, never fatal
        log.debug("could not post the summary artifact: %s", exc)
