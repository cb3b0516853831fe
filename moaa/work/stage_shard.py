"""One stage-shard of work: read a shard of prompts, fan out over the engine, append results.

`run_shard` is what a Prefect task calls (flows/pipeline_flow.py). It is self-contained — paths in,
paths out, the config as plain data — so any worker (thread, Dask or Ray process) can run any
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
from dataclasses import replace
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


def run_shard(
    stage: str,
    config: MoaaConfig | dict[str, Any],
    shard_path: str | Path,
    out_dir: str | Path,
    roles: list[str] | None = None,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> ShardResult:
    """Run one shard to completion and return its result (also saved as `out_dir/DONE`).

    `stop`, shared by the shards of one process: once set, the shard drops its in-flight calls
    (finished prompts stay written) and raises RunStopped; a run-fatal MoaaError here sets it.
    A shard already begun in this process (start_shard) is waited for, not started again.
    """
    with _started_lock:
        begun = _started.pop(str(Path(out_dir)), None)
    if begun is None:
        begun = _begin(stage, config, shard_path, out_dir, roles, progress, stop)
    return begun if isinstance(begun, ShardResult) else begun.wait()


def start_shard(
    stage: str,
    config: MoaaConfig | dict[str, Any],
    shard_path: str | Path,
    out_dir: str | Path,
    roles: list[str] | None = None,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> concurrent.futures.Future | None:
    """Begin a shard on this process's shard loop now and return its future (None: it was DONE);
    `run_shard` for the same folder then waits for it (moaa.work.launch: shards run while
    Prefect's API starts).

    Its result comes without the accounting (ShardResult.without_stats; the DONE file has it):
    a run begins every shard of a stage this way before its flow joins them, and 1,000 shards'
    latency samples held until then were ~30 MiB of a 100,000-prompt run's peak memory."""
    begun = _begin(stage, config, shard_path, out_dir, roles, progress, stop, lean=True)
    if not isinstance(begun, _Begun):
        return None
    with _started_lock:
        _started[str(Path(out_dir))] = begun
    return begun.future


def abandon_started(out_dirs: list[str]) -> None:
    """Wait for begun shards that no `run_shard` took (their run is stopping: set their `stop`)."""
    for out in out_dirs:
        with _started_lock:
            begun = _started.pop(out, None)
        if begun is not None:
            try:
                begun.wait()
            except BaseException:  # noqa: BLE001 - stopped or failed: the run's own error is reported
                pass


_started: dict[str, _Begun] = {}
_started_lock = threading.Lock()


class _Begun:
    """A shard running on the shard loop, holding its folder's lock until it is waited for."""

    def __init__(self, future: Any, lock: FolderLock, out: Path, stop: threading.Event | None):
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


def _begin(
    stage: str,
    config: MoaaConfig | dict[str, Any],
    shard_path: str | Path,
    out_dir: str | Path,
    roles: list[str] | None,
    progress: Any,
    stop: threading.Event | None,
    lean: bool = False,
) -> ShardResult | _Begun:
    """A finished shard's result, or the shard started on the shard loop under its folder's lock
    (`lean`: its result without the accounting, see start_shard)."""
    if not isinstance(config, MoaaConfig):
        config = MoaaConfig.model_validate(config)
    out = Path(out_dir)
    if (done := _done(out, progress)) is not None:
        return done
    # A shard runs in one place at a time: a re-executed distributed shard (a lost worker that was
    # not lost after all) waits for the first attempt and then finds it DONE, rather than appending
    # the same prompts to the same files alongside it.
    try:
        lock = FolderLock(out, "shard folder")
        lock.acquire(wait=True)
    except OSError as exc:
        raise storage_error(f"work folder {out}", exc, "run.work_dir") from None
    try:
        if (done := _done(out, progress)) is not None:
            lock.release()
            return done
        if stop is not None and stop.is_set():
            raise RunStopped(f"{out.name}: not started, the run is stopping")
        work = _run_shard(stage, config, Path(shard_path), out, roles, progress, stop)
        future = asyncio.run_coroutine_threadsafe(_without_stats(work) if lean else work, shard_loop())
    except BaseException:
        lock.release()
        raise
    return _Begun(future, lock, out, stop)


async def _without_stats(work: Coroutine[Any, Any, ShardResult]) -> ShardResult:
    return (await work).without_stats()


def _done(out: Path, progress: Any) -> ShardResult | None:
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


async def _run_shard(
    stage: str,
    config: MoaaConfig,
    shard_path: Path,
    out_dir: Path,
    roles: list[str] | None,
    progress: Any,
    stop: threading.Event | None = None,
) -> ShardResult:
    started = time.time()
    stats = RunStats()
    if progress is not None and hasattr(progress, "track"):
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
    if progress is not None and hasattr(progress, "settle"):
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
    roles: list[str] | None,
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
            roles=roles, answers=config.answers, verifier=verifier,
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
