"""One stage-shard of work: read a shard of prompts, fan out over the engine, append results.

`run_shard(job)` is what a Prefect task calls (flows/pipeline_flow.py). A ShardJob is self-contained —
paths in, paths out, the resolved config — so any worker (thread, Dask or Ray process) can run any
shard, and a lost worker's shard simply runs again: prompts already written are skipped, and
the request cache answers the calls that had finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from moaa.config import MoaaConfig
from moaa.errors import FailureRateExceeded, MoaaError, storage_error
from moaa.locks import FolderLock
from moaa.models.batch import batch_enabled
from moaa.models.client import ChatClient
from moaa.models.session import build_clients
from moaa.models.stats import RunStats
from moaa.rows import Failure, Prompt, TraceStep
from moaa.work.shard_result import ShardResult, ShardTally
from moaa.work.shards import ShardOutput, read_done, read_done_counts, read_jsonl

log = logging.getLogger(__name__)

STAGES = ("sft", "preference")


class RunStopped(MoaaError):
    """The shard stopped because its run is stopping (Ctrl-C, or another shard's run-fatal error)."""


@dataclass(frozen=True)
class ShardJob:
    """One shard of one stage: everything a worker needs to run it, as picklable data (a Dask or Ray
    worker gets it whole), so any worker can run any shard and a lost worker's shard simply runs
    again: prompts already written are skipped, and the request cache answers the finished calls."""

    stage: str  # one of STAGES
    config: MoaaConfig  # the run's config, resolved (local endpoints started): validated once, by the run
    shard: Path  # the shard's prompts (JSONL)
    out: Path  # its folder: rows, trace, failures, the calls journal, DONE
    roles: tuple[str, ...] | None = None  # SMoA's generated roles (sft)


class ShardProgress(Protocol):
    """The stage's progress display as a shard feeds it (moaa.work.progress.Progress)."""

    def advance(self, failed: bool = False) -> None: ...
    def track(self, key: str, stats: RunStats) -> None: ...
    def settle(self, key: str) -> None: ...


@dataclass
class ShardHooks:
    """What only a shard run in the run's own process gets: the stage's progress display, the run's
    stop event (once set, the shard drops its in-flight calls, keeps its finished prompts and raises
    RunStopped; a run-fatal MoaaError here sets it), and the shard already begun early
    (moaa.work.launch), which is joined instead of started again."""

    progress: ShardProgress | None = None
    stop: threading.Event | None = None
    begun: BegunShard | None = None


def run_shard(job: ShardJob, hooks: ShardHooks | None = None) -> ShardResult:
    """Run one shard to completion and return its result (also saved as `job.out/DONE`)."""
    hooks = hooks or ShardHooks()
    begun, hooks.begun = hooks.begun, None  # joined once: a retried task starts the shard again
    if begun is None:
        begun = begin_shard(job, hooks)
    return begun if isinstance(begun, ShardResult) else begun.wait()


class BegunShard:
    """A shard running on the shard loop, holding its folder's lock until it is waited for."""

    def __init__(self, future: concurrent.futures.Future, lock: FolderLock, out: Path, stop: threading.Event | None):
        self.future, self.lock, self.out, self.stop = future, lock, out, stop

    def wait(self) -> ShardResult:
        try:
            return self.future.result()
        except MoaaError:
            if self.stop is not None:
                self.stop.set()  # a failure rate or a refused key ends the whole run, not just this shard
            raise
        except OSError as exc:  # disk full, read-only: one line naming the folder; rows so far are kept
            if self.stop is not None:
                self.stop.set()
            raise storage_error(f"work folder {self.out}", exc, "run.work_dir") from None
        except BaseException:
            self.future.cancel()  # Ctrl-C in the waiting thread: drop the shard's in-flight calls
            raise
        finally:
            self.lock.release()


def begin_shard(job: ShardJob, hooks: ShardHooks, lean: bool = False) -> ShardResult | BegunShard:
    """A finished shard's result, or the shard started on the shard loop under its folder's lock.

    `lean`: its result comes without the accounting (ShardResult.without_stats; the DONE file has
    it): moaa.work.launch begins every shard of a stage this way before the flow joins them, and
    1,000 shards' latency samples held until then were ~30 MiB of a 100,000-prompt run's peak memory."""
    progress, stop = hooks.progress, hooks.stop
    if (done := _done(job.out, progress)) is not None:
        return done
    # A shard runs in one place at a time: a re-executed distributed shard (a lost worker that was
    # not lost after all) waits for the first attempt and then finds it DONE, rather than appending
    # the same prompts to the same files alongside it.
    try:
        lock = FolderLock(job.out, "shard folder")
        lock.acquire(wait=True)
    except OSError as exc:
        raise storage_error(f"work folder {job.out}", exc, "run.work_dir") from None
    try:
        if (done := _done(job.out, progress)) is not None:
            lock.release()
            return done
        if stop is not None and stop.is_set():
            raise RunStopped(f"{job.out.name}: not started, the run is stopping")
        work = _run_shard(job, progress, stop)
        future = asyncio.run_coroutine_threadsafe(_without_stats(work) if lean else work, shard_loop())
    except BaseException:
        lock.release()
        raise
    return BegunShard(future, lock, job.out, stop)


async def _without_stats(work: Coroutine[Any, Any, ShardResult]) -> ShardResult:
    return (await work).without_stats()


def _done(out: Path, progress: ShardProgress | None) -> ShardResult | None:
    """A finished shard's result (its prompts counted in the progress display), or None."""
    done = read_done(out)
    if done is None:
        return None
    if progress is not None:
        for _ in range(done.counts.prompts):
            progress.advance()
    return replace(done, skipped=True)


_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def shard_loop() -> asyncio.AbstractEventLoop:
    """The process's one event loop for shards, running in a daemon thread.

    Every shard of a process (the thread runner's parallel shards, or a Dask/Ray worker's) runs
    its fan-out here rather than on a loop of its own: one loop serves all their sockets, limiter
    wake-ups stay on one thread, and shards do not contend for the GIL loop against loop (four
    loops in four threads ran ~25% slower than one). Blocking work inside a shard (embeddings,
    a reward model, a transformers backend) already goes to worker threads.
    """
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():  # new, or inherited by a fork
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="moaa-shards", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


class PromptOutcome(Protocol):
    """What a stage gives per prompt: moaa.engine.PromptResult (sft) or moaa.preference.PreferenceResult."""

    prompt: Prompt
    row: Any
    trace: list[TraceStep]
    failure: Failure | None
    counters: dict[str, int]


async def _run_shard(job: ShardJob, progress: ShardProgress | None, stop: threading.Event | None) -> ShardResult:
    stage, config, shard_path, out_dir, roles = job.stage, job.config, job.shard, job.out, job.roles
    started = time.time()
    stats = RunStats()
    if progress is not None:
        progress.track(str(out_dir), stats)  # its live counters show in the progress display
    output = ShardOutput(out_dir)
    earlier = output.journal(stats)  # the calls of attempts that were killed count in the totals
    prompts = [Prompt(**r) for r in read_jsonl(shard_path)]
    todo = [p for p in prompts if p.prompt_id not in output.done_ids]
    # Resumed prompts are those already on disk: rows, and permanent failures (transient ones of an
    # earlier attempt are asked again).
    resumed = len(prompts) - len(todo)
    tally = ShardTally(len(prompts), resumed, rows=resumed - output.kept_failures, failed=output.kept_failures)
    tally.counters.update(output.resumed_counters)  # the journaled counters of the prompts already on disk
    if progress is not None:
        for _ in range(resumed):
            progress.advance()
    clients = build_clients(config, stats, work_dir=out_dir)
    guard = _FailureGuard(config, stage, out_dir.parent)

    def on_result(result: PromptOutcome, dropped: str | None) -> None:
        rows = [result.row.to_dict()] if result.row is not None else []
        failures = [result.failure.to_dict()] if result.failure is not None else []
        counted = ShardTally.counted(result.counters, result.trace)
        output.add(rows, [t.to_dict() for t in result.trace], failures, (result.prompt.prompt_id, counted))
        tally.add(len(rows), len(failures), dropped, result.counters, result.trace)
        if progress is not None:
            progress.advance(failed=bool(failures))
        guard.failures.extend(failures)
        guard.check(tally.finished, tally.failed)

    try:
        work = _dispatch(stage, config, todo, clients, on_result, roles, out_dir)
        await _until_stopped(work, stop, out_dir.name)
    finally:
        output.close()
        for client in clients.values():
            if hasattr(client, "aclose"):
                await client.aclose()  # a cached client commits its queued answers, then closes its inner one
    attempt = stats.to_dict()
    earlier.merge(attempt)
    result = ShardResult(
        stage=stage,
        shard=shard_path.name,
        counts=tally.frozen(),
        stats=earlier.to_dict(),  # every attempt's calls (a reopened shard's earlier runs included)
        attempt_stats=attempt,  # this attempt's: the summary's "this run"
        seconds=time.time() - started,
        finished_at=time.time(),
    )
    output.finish(result)
    if progress is not None:
        progress.settle(str(out_dir))
    return result


async def _until_stopped(work: Any, stop: threading.Event | None, shard: str) -> None:
    """Await `work`, cancelling it (in-flight calls are dropped) as soon as `stop` is set."""
    task = asyncio.ensure_future(work)
    while stop is not None and not task.done():
        await asyncio.wait({task}, timeout=0.1)
        if stop.is_set() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise RunStopped(f"{shard}: stopped with the run; its finished prompts are kept")
    await task


async def _dispatch(
    stage: str,
    config: MoaaConfig,
    prompts: list[Prompt],
    clients: dict[str, ChatClient],
    on_result: Callable[[PromptOutcome, str | None], None],
    roles: tuple[str, ...] | None,
    out_dir: Path,
) -> None:
    """Run the stage over `prompts`; `on_result(outcome, drop reason)` per prompt (only preference drops)."""
    in_flight = max(8, 2 * sum(config.endpoints[n].max_concurrency for n in clients))
    if stage == "sft":  # rows land as the run goes: a window of prompts, not the whole shard at once
        from moaa.engine.methods import prompt_window

        in_flight = prompt_window(config.sft, sum(config.endpoints[n].max_concurrency for n in clients))
    if any(batch_enabled(config, n) for n in clients):
        in_flight = max(in_flight, len(prompts))  # batch mode: a round of every prompt goes out as one batch
    if stage == "sft":
        from moaa.engine import run_prompts
        from moaa.verify import Verifier

        verifier = Verifier(config.verify) if config.sft.verify.mode != "off" else None
        await run_prompts(
            prompts, config.sft, clients, on_result=lambda r: on_result(r, None), max_in_flight=in_flight,
            roles=list(roles) if roles else None, answers=config.answers, verifier=verifier,
        )  # fmt: skip
    elif stage == "preference":
        from moaa.preference import run_preference_prompts
        from moaa.verify import Verifier
        from moaa.work.sft_answers import read_sft_answers

        pref = config.preference
        checked = pref.verify != "off" or pref.scorer.kind == "verifier"
        mixture = read_sft_answers(config, out_dir, prompts) if pref.include_sft_answer else None
        await run_preference_prompts(
            prompts, pref, clients, on_result=lambda r: on_result(r, r.dropped), max_in_flight=in_flight,
            answers=config.answers, verifier=Verifier(config.verify) if checked else None, sft_answers=mixture,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown stage {stage!r}")


class _FailureGuard:
    """Stops a shard early once too many of the stage's prompts failed (saves budget on a broken setup).

    The rate counts this shard's prompts plus those of the stage's shards already finished, so
    shards smaller than `run.min_prompts_for_failure_rate` still stop a broken run.
    """

    def __init__(self, config: MoaaConfig, stage: str, stage_dir: Path):
        self.max_rate = config.run.max_failure_rate
        self.min_prompts = config.run.min_prompts_for_failure_rate
        self.stage = stage
        self.stage_dir = stage_dir
        self.config = config
        self.failures: list[dict[str, Any]] = []  # this shard's, for naming the commonest cause
        self.done_finished = self.done_failed = 0
        for folder in stage_dir.glob("shard-*"):
            counts = read_done_counts(folder)
            if counts is not None:
                self.done_finished += counts.finished
                self.done_failed += counts.failed

    def check(self, finished: int, failed: int) -> None:
        finished, failed = finished + self.done_finished, failed + self.done_failed
        if finished >= self.min_prompts and failed / finished > self.max_rate:
            from moaa.work.outcome import commonest_cause, endpoint_hint

            # This shard's failures, else the finished shards' (it may stop on its first success after theirs).
            text, hits, seen = commonest_cause(self.failures or self._finished_failures())
            cause = f"; commonest cause ({hits} of {seen}): {text}{endpoint_hint(text, self.config)}" if text else ""
            raise FailureRateExceeded(
                f"{self.stage}: {failed} of {finished} prompts failed (limit run.max_failure_rate="
                f"{self.max_rate:g}){cause}; finished rows are kept — fix the cause (failures: "
                f"{self.stage_dir}/shard-*/failures.jsonl) and run the same command again to resume"
            )

    def _finished_failures(self) -> list[dict[str, Any]]:
        from moaa.errors import DamagedFile

        found: list[dict[str, Any]] = []
        for folder in sorted(self.stage_dir.glob("shard-*")):
            try:
                found.extend(read_jsonl(folder / "failures.jsonl"))
            except DamagedFile:
                continue  # the shard is redone by the next run; the other shards still name the cause
        return found
