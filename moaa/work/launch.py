"""Open a run and begin its first shards, with or without Prefect yet.

A run's set-up — its plan, the work-folder lock, the local model servers, SMoA's roles — needs no
Prefect, and neither does a shard's work. So `moaa run` with a Prefect API server of its own opens
the run (open_run) and begins the SFT stage's shards (begin_early) before that server starts,
waits for them (StageRun.wait_begun), then starts it; the flow then runs on that open run, and
each of those shards' Prefect task runs joins the work already done or under way (its
ShardHooks.begun, StageRun.hooks_for) instead of starting it. A scheduled or deployed run opens its
run inside the flow, as before. Nothing here imports Prefect.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from moaa.config import MoaaConfig, PromptSourceConfig, check_environment
from moaa.locks import FolderLock
from moaa.models.session import local_endpoints, open_cache
from moaa.public import install_log_scrubber
from moaa.work.progress import Progress
from moaa.work.run_plan import RunPlan, plan_run, reopen_earlier_failures
from moaa.work.shards import read_done
from moaa.work.smoa_roles import run_roles
from moaa.work.stage_shard import BegunShard, ShardHooks, ShardJob, begin_shard
from moaa.work.totals import collect

log = logging.getLogger(__name__)

BUSY_ADVICE = "wait for that run to finish (or stop it), then run the same command again to resume"


@dataclass
class OpenRun:
    """A planned run holding its work folder, with its local endpoints running (config resolved)."""

    plan: RunPlan
    config: MoaaConfig
    roles: list[str] | None
    started: float
    early: StageRun | None = None  # the SFT stage begun before the flow (begin_early), until the flow takes it

    def take_early(self, stage: str) -> StageRun | None:
        """The stage's run begun early, handed over once (its shards' tasks then join them): from
        now on it begins no shard of its own."""
        run = self.early
        if run is None or run.stage != stage:
            return None
        self.early = None
        run.hand_over()
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
    with ExitStack() as served:
        source, folder, endpoints = None, None, config
        if config.instructions is not None:  # the prompts are made first (moaa.instructions), then planned
            source, folder, endpoints = _synthesize(config, base_dir, wait_for_lock, served)
        plan = plan_run(config, base_dir=base_dir, source=source)
        plan.instructions_dir, plan.started = folder, started  # the stage's calls are this run's too
        with FolderLock(plan.work_dir, "work folder").hold(wait=wait_for_lock, advice=BUSY_ADVICE):
            plan.earlier_failures = reopen_earlier_failures(plan)
            if any(unfinished(shards)[0] for shards in plan.shards.values()):
                open_cache(config.cache)  # damaged or unwritable: one line now, not from every shard later
            with local_endpoints(endpoints, plan.work_dir) as resolved:
                opened = OpenRun(plan, resolved, run_roles(resolved, plan), started)
                try:
                    yield opened
                finally:
                    if opened.early is not None:  # begun, never taken by a flow (Prefect did not start)
                        opened.early.abandon()


def _synthesize(
    config: MoaaConfig, base_dir: Path | None, wait_for_lock: bool, served: ExitStack
) -> tuple[PromptSourceConfig, Path, MoaaConfig]:
    """Run the instruction stage under its folder's lock, its local endpoints started in `served` (the
    run's own stage then uses the same servers); (the prompt source it made, its folder, `config` with
    those endpoints)."""
    from moaa.instructions.batches import stage_folder, synthesize

    folder = stage_folder(config, base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    resolved = served.enter_context(local_endpoints(config, folder))
    open_cache(config.cache)
    with FolderLock(folder, "instruction folder").hold(wait=wait_for_lock, advice=BUSY_ADVICE):
        source = synthesize(resolved, base_dir)
    return source, folder, config.model_copy(update={"endpoints": resolved.endpoints})


@dataclass
class StageRun:
    """One stage's run in this process: its unfinished shards, progress display and stop event."""

    stage: str
    jobs: list[ShardJob]  # its unfinished shards, on the run's resolved config (SMoA's roles to sft's)
    progress: Progress
    stats: LiveStats
    in_process: bool
    stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C or a run-fatal error stops every shard
    begun: list[str] = field(default_factory=list)  # shard folders begun by begin_early, in jobs' order
    _exits: ExitStack = field(default_factory=ExitStack)
    _handed: bool = False  # taken by the flow, abandoned, or a shard failed to begin: begin no more
    _begin_lock: threading.Lock = field(default_factory=threading.Lock)
    _running: list[concurrent.futures.Future] = field(default_factory=list)  # the shards begun early, as begun
    _joinable: dict[str, BegunShard] = field(default_factory=dict)  # begun, not yet joined by a task (hooks_for)

    @classmethod
    def open(cls, stage: str, opened: OpenRun) -> StageRun:
        """The stage's shards still to run, its progress display started (close() ends it)."""
        plan = opened.plan
        todo, done_before = unfinished(plan.shards.get(stage, []))
        stats = LiveStats(plan, stage)
        progress = Progress(stage, plan.total(stage), stats.stats, interval_s=10.0, done_before=done_before)
        roles = tuple(opened.roles) if stage == "sft" and opened.roles else None
        jobs = [ShardJob(stage, opened.config, inp, out, roles) for inp, out in todo]
        run = cls(stage, jobs, progress, stats, in_process=opened.config.run.task_runner == "threads")
        run._exits.enter_context(progress)
        return run

    def hooks_for(self, job: ShardJob) -> ShardHooks | None:
        """A task's hooks for `job` where the shard runs in this process (None on Dask or Ray): the
        progress display, the stop event, and the shard if it was begun early (joined, once)."""
        if not self.in_process:
            return None
        with self._begin_lock:
            begun = self._joinable.pop(str(job.out), None)
        return ShardHooks(self.progress, self.stop, begun)

    def close(self) -> None:
        self._exits.close()

    def begin(self, width: int) -> None:
        """Begin `width` of the jobs now, each beginning the next as it ends (begin_next)."""
        for _ in range(width):
            self.begin_next()

    def begin_next(self, ended: concurrent.futures.Future | None = None) -> None:
        """Begin the next shard not begun yet, unless the stage was handed over, is stopping, or
        `ended` (the shard that ended just now) failed: the task that joins it reports that.

        Each shard begun here begins the next when it ends, on a thread of its own (never the
        shard loop's: a shard folder's lock may wait), so the stage keeps as many shards running
        as it began however long Prefect's API takes to start."""
        if ended is not None and (ended.cancelled() or ended.exception() is not None):
            return
        while True:
            with self._begin_lock:
                if self._handed or self.stop.is_set() or len(self.begun) >= len(self.jobs):
                    return
                job = self.jobs[len(self.begun)]
                try:
                    begun = begin_shard(job, ShardHooks(self.progress, self.stop), lean=True)
                except Exception as exc:  # noqa: BLE001 - its task starts it again and reports the error
                    log.debug("shard %s was not begun early: %s", job.out.name, exc)
                    self._handed = True
                    return
                self.begun.append(str(job.out))
                future = begun.future if isinstance(begun, BegunShard) else None  # None: it was DONE already
                if isinstance(begun, BegunShard):
                    self._joinable[str(job.out)] = begun
                    self._running.append(begun.future)
            if future is not None:  # None: it was done already, begin the one after it
                chain = lambda f: threading.Thread(target=self.begin_next, args=(f,), daemon=True).start()  # noqa: E731
                future.add_done_callback(chain)
                return

    def wait_begun(self, poll_s: float = 0.5) -> None:
        """Until the shards begun early are all done and none will begin: every shard was begun,
        one failed (its task reports it), or the stage was handed over or stopped. In steps of
        poll_s, so that a Ctrl-C meanwhile is raised here."""
        while True:
            with self._begin_lock:
                running = list(self._running)
                failed = any(f.done() and (f.cancelled() or f.exception() is not None) for f in running)
                ended = self._handed or self.stop.is_set() or failed or len(self.begun) >= len(self.jobs)
            if ended and all(f.done() for f in running):
                with self._begin_lock:
                    if len(self._running) == len(running):  # none begun since
                        return
            concurrent.futures.wait(running, timeout=poll_s, return_when=concurrent.futures.FIRST_EXCEPTION)
            if all(f.done() for f in running):
                time.sleep(0.01)  # the next begins on a thread of the one that ended: let it

    def hand_over(self) -> None:
        """Begin no more shards (the flow's tasks run the rest); `begun` stays as it is now."""
        with self._begin_lock:
            self._handed = True

    def abandon(self) -> None:
        """Stop the shards begun early that no task joined and wait for them (their finished
        prompts stay written; their folders are released)."""
        self.hand_over()
        self.stop.set()
        with self._begin_lock:
            left, self._joinable = list(self._joinable.values()), {}
        for begun in left:
            try:
                begun.wait()
            except BaseException:  # noqa: BLE001 - stopped or failed: the run's own error is reported
                pass
        self.begun.clear()
        self.close()


def begin_early(opened: OpenRun, stage: str = "sft") -> StageRun | None:
    """Begin the stage's shards in this process now, as the thread runner would run them.

    Only for the thread runner (a Dask or Ray shard runs elsewhere). `run.max_parallel_shards`
    run at once; as one ends the next begins, until the flow takes the stage over (take_early)
    and its tasks join the shards begun and run the rest. Returns the stage run (also kept as
    `opened.early`), or None when nothing was begun.
    """
    if opened.config.run.task_runner != "threads" or not opened.plan.shards.get(stage):
        return None
    run = opened.early = StageRun.open(stage, opened)
    run.begin(opened.config.run.max_parallel_shards)
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

    def __init__(self, plan: RunPlan, stage: str, every_s: float = 10.0):
        self.plan, self.stage, self.every_s = plan, stage, every_s
        self.stats = collect(plan).stats
        self._last = time.monotonic()

    def refresh(self) -> None:
        # Re-reading every DONE file costs O(shards): at most once per interval, not once per shard.
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        fresh = collect(self.plan).stats
        self.stats.endpoints, self.stats.tags, self.stats.latencies = fresh.endpoints, fresh.tags, fresh.latencies
