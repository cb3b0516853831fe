"""Open a run and begin its first shards, with or without Prefect yet.

A run's set-up — its plan, the work-folder lock, the local model servers, SMoA's roles — needs no
Prefect, and neither does a shard's work. So `moaa run` opens the run (open_run) and begins the
SFT stage's first shards (begin_early) while Prefect's API server is still starting in another
thread; the flow then runs on that open run, and each of those shards' Prefect task runs joins
the work already under way (moaa.work.stage_shard.start_shard) instead of starting it. A
scheduled or deployed run opens its run inside the flow, as before. Nothing here imports Prefect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from moaa.config import MoaaConfig, check_environment
from moaa.locks import FolderLock
from moaa.models.session import local_endpoints
from moaa.public import install_log_scrubber
from moaa.work import steps as P
from moaa.work.progress import Progress
from moaa.work.shards import read_done
from moaa.work.stage_shard import abandon_started, start_shard

BUSY_ADVICE = "wait for that run to finish (or stop it), then run the same command again to resume"


@dataclass
class OpenRun:
    """A planned run holding its work folder, with its local endpoints running (config resolved)."""

    plan: P.RunPlan
    config: MoaaConfig
    roles: list[str] | None
    started: float
    early: StageRun | None = None  # the SFT stage begun before the flow (begin_early), until the flow takes it

    def take_early(self, stage: str) -> StageRun | None:
        """The stage's run begun early, handed over once (its shards' tasks then join them)."""
        run = self.early
        if run is None or run.stage != stage:
            return None
        self.early = None
        return run


@contextmanager
def open_run(config: MoaaConfig, base_dir: Path | None = None, wait_for_lock: bool = False) -> Iterator[OpenRun]:
    """Plan `config`, hold its work folder, start its local endpoints and roles; undo all at exit.

    One run per work folder: a second run of this config (an overlapping schedule, a second
    terminal) is refused naming the first, instead of asking and writing every prompt twice.
    """
    install_log_scrubber()  # deployments and workers too, not only the CLI
    check_environment(config)
    started = time.time()
    plan = P.plan_run(config, base_dir=base_dir)
    with FolderLock(plan.work_dir, "work folder").hold(wait=wait_for_lock, advice=BUSY_ADVICE):
        plan.earlier_failures = P.reopen_earlier_failures(plan)
        with local_endpoints(config, plan.work_dir) as resolved:
            opened = OpenRun(plan, resolved, P.run_roles(resolved, plan), started)
            try:
                yield opened
            finally:
                if opened.early is not None:  # begun, never taken by a flow (Prefect did not start)
                    opened.early.abandon()


@dataclass
class StageRun:
    """One stage's run in this process: its unfinished shards, progress display and stop event."""

    stage: str
    todo: list[tuple[Path, Path]]
    progress: Progress
    stats: LiveStats
    in_process: bool
    stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C or a run-fatal error stops every shard
    begun: list[str] = field(default_factory=list)  # shard folders begun by begin_early
    _exits: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def open(cls, stage: str, opened: OpenRun) -> StageRun:
        """The stage's shards still to run, its progress display started (close() ends it)."""
        plan = opened.plan
        todo, done_before = unfinished(plan.shards.get(stage, []))
        stats = LiveStats(plan, stage)
        progress = Progress(stage, plan.total(stage), stats.stats, interval_s=10.0, done_before=done_before)
        run = cls(stage, todo, progress, stats, in_process=opened.config.run.task_runner == "threads")
        run._exits.enter_context(progress)
        return run

    def close(self) -> None:
        self._exits.close()

    def abandon(self) -> None:
        """Stop the shards begun early and wait for them (their finished prompts stay written)."""
        self.stop.set()
        abandon_started(self.begun)
        self.begun.clear()
        self.close()


def begin_early(opened: OpenRun, stage: str = "sft") -> StageRun | None:
    """Begin the stage's first shards in this process now, as the thread runner would run them.

    Only for the thread runner (a Dask or Ray shard runs elsewhere) and at most
    `run.max_parallel_shards` of them: the rest start when their task does. Returns the stage run
    (also kept as `opened.early`), or None when nothing was begun.
    """
    if opened.config.run.task_runner != "threads" or not opened.plan.shards.get(stage):
        return None
    run = StageRun.open(stage, opened)
    roles = opened.roles if stage == "sft" else None
    for inp, out in run.todo[: opened.config.run.max_parallel_shards]:
        start_shard(stage, opened.config, inp, out, roles=roles, progress=run.progress, stop=run.stop)
        run.begun.append(str(out))
    opened.early = run
    return run


def unfinished(shards: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], int]:
    """The shards still to run, and the prompts of those already DONE (no task: `collect` reads them)."""
    todo, done_prompts = [], 0
    for inp, out in shards:
        done = read_done(out)
        if done is None:
            todo.append((inp, out))
        else:
            done_prompts += done.counts.prompts
    return todo, done_prompts


class LiveStats:
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
