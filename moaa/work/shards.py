"""Shard files on disk: the unit of work a stage task reads and writes.

A stage's work folder holds `inputs/shard-NNNNN.jsonl` (prompts) and, per shard, an output folder
`shard-NNNNN/` with `rows.jsonl`, `trace.jsonl`, `failures.jsonl`, `calls.jsonl` (the accounting
journal of every attempt) and, once complete, `DONE` (its moaa.work.shard_result.ShardResult as JSON,
written atomically).
One process writes a shard folder at a time (moaa.work.stage_shard.run_shard holds its `.moaa.lock`).
Rows are appended and flushed one prompt at a time, so a killed process loses at most the prompts
in flight; on resume the prompt ids already in `rows.jsonl` are skipped, the failures of the
unfinished attempt are asked again, and a torn last line is cut off.

Failures are transient or permanent (moaa.rows.is_transient). Before a run, `reopen_failures`
decides which failed prompts it asks again: a finished shard's transient ones (its DONE goes; the
calls it paid for stay in `calls.jsonl`, so the totals keep them), keeping the permanent ones (400,
content filter); every one of an unfinished shard (a stopped or killed run: fixing the cause and
re-running completes them) or of a stage that made no row (no version holds them). A prompt is in
`rows.jsonl` or `failures.jsonl`, never both, never twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from moaa.fileio import write_json_atomic, write_jsonl_atomic
from moaa.models.stats import RunStats
from moaa.public import scrub_text
from moaa.rows import failure_is_transient
from moaa.work.shard_result import ShardCounts, ShardResult

OUTPUT_FILES = ("rows", "trace", "failures")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn (unterminated) last line is ignored."""
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # torn write from a killed process
            if line.strip():
                yield json.loads(line)


def split_into_shards(records: Iterable[dict[str, Any]], folder: Path, shard_size: int, start: int = 0) -> list[Path]:
    """Write records as `shard-NNNNN.jsonl` files of `shard_size` (idempotent for equal input),
    numbered from `start` (a scheduled run appends shards after those of earlier runs).

    Reads `records` once, holding one shard's worth at a time. A shard file that already holds
    exactly these records is left alone (a re-plan of the same run writes and syncs nothing).
    """
    paths: list[Path] = []
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == shard_size:
            paths.append(_write_shard(folder, start + len(paths), batch))
            batch = []
    if batch:
        paths.append(_write_shard(folder, start + len(paths), batch))
    return paths


def _write_shard(folder: Path, index: int, batch: list[dict[str, Any]]) -> Path:
    path = folder / f"shard-{index:05d}.jsonl"
    try:
        same = path.read_bytes() == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch).encode()
    except FileNotFoundError:
        same = False
    if not same:
        write_jsonl_atomic(path, batch)
    return path


class ShardOutput:
    """Appends a shard's results prompt by prompt; knows which prompts are already done."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("*.tmp"):  # a killed attempt's half-written temp files (we hold the shard lock)
            leftover.unlink(missing_ok=True)
        self.done_ids: set[str] = set()
        for name in ("rows", "failures"):
            self._truncate_torn_tail(self.path(name))
        # Failures on disk are done: reopen_failures, before the run, took out those to ask again.
        self.kept_failures = sum(1 for _ in read_jsonl(self.path("failures")))
        for name in ("rows", "failures"):
            self.done_ids.update(r["prompt_id"] for r in read_jsonl(self.path(name)))
        self._keep_trace_of_done()
        self._files = {name: self.path(name).open("a", encoding="utf-8") for name in OUTPUT_FILES}
        self._stats: RunStats | None = None  # whose journal is calls.jsonl (see journal)

    def journal(self, stats: RunStats) -> RunStats:
        """Journal `stats` to `calls.jsonl` as calls happen; returns the earlier attempts' accounting.

        A killed attempt's calls (those of its finished prompts and of the prompts in flight) are in
        the journal; the resumed attempt gets the keys they paid for as `stats.prepaid`, so the cache
        answering them again is not counted twice. DONE holds the sum.
        """
        path = self.folder / "calls.jsonl"
        self._truncate_torn_tail(path)
        earlier = RunStats()
        stats.prepaid = earlier.replay(read_jsonl(path))
        stats.journal = self._files["calls"] = path.open("ab", buffering=0)  # see RunStats.journal
        self._stats = stats
        return earlier

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.jsonl"

    @property
    def complete(self) -> bool:
        return (self.folder / "DONE").exists()

    def add(self, rows: list[dict], trace: list[dict], failures: list[dict]) -> None:
        """Record one prompt's results; trace first so a row never lacks its trace. Secrets are
        scrubbed here (a server may echo the key in an error or an answer). The journal's records
        go first: a row on disk is never without the accounting of its calls."""
        if self._stats is not None:
            self._stats.write_journal()
        for name, records in (("trace", trace), ("rows", rows), ("failures", failures)):
            if records:
                fh = self._files[name]
                fh.write(scrub_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)))
                fh.flush()

    def finish(self, result: ShardResult) -> None:
        for fh in self._files.values():
            if not fh.closed:  # run_shard closes them in its `finally` before finishing
                fh.flush()
                os.fsync(fh.fileno())
        self.close()
        write_json_atomic(self.folder / "DONE", result.to_dict())

    def close(self) -> None:
        if self._stats is not None:
            self._stats.write_journal()
        for fh in self._files.values():
            if not fh.closed:
                fh.close()

    def _keep_trace_of_done(self) -> None:
        """Drop trace records of prompts that never finished (they are asked again)."""
        path = self.path("trace")
        if path.exists():
            self._truncate_torn_tail(path)
            write_jsonl_atomic(path, (r for r in list(read_jsonl(path)) if r["prompt_id"] in self.done_ids))

    @staticmethod
    def _truncate_torn_tail(path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)


def reopen_failures(folder: Path, everything: bool = False) -> dict[str, int]:
    """Take out of a shard's failures.jsonl the failed prompts this run asks again; returns counts
    {"transient": re-asked, "other": permanent ones re-asked, "permanent": kept}.

    Finished shard: its transient failures (all of them when `everything`: its stage made no row).
    Unfinished shard: all of them. DONE goes before the failures are touched, so a kill in between
    leaves an unfinished shard, which asks all again, never a finished shard missing prompts."""
    path = folder / "failures.jsonl"
    rows = list(read_jsonl(path))
    done = read_done(folder)
    again = [r for r in rows if done is None or everything or failure_is_transient(r)]
    if not again:
        return {"transient": 0, "other": 0, "permanent": len(rows)}
    if done is not None:  # its calls stay in calls.jsonl: the re-run's DONE sums every attempt
        (folder / "DONE").unlink()
    write_jsonl_atomic(path, [r for r in rows if r not in again])
    transient = sum(1 for r in again if failure_is_transient(r))
    return {"transient": transient, "other": len(again) - transient, "permanent": len(rows) - len(again)}


def read_done(folder: Path) -> ShardResult | None:
    """A finished shard's result (from its DONE file), or None while it is unfinished."""
    path = folder / "DONE"
    return ShardResult.from_dict(json.loads(path.read_text())) if path.exists() else None


_counts: dict[tuple[str, int, int, int], ShardCounts] = {}


def read_done_counts(folder: Path) -> ShardCounts | None:
    """A finished shard's counts, or None: read_done's, parsed once per DONE file per process.

    Every shard start sums the stage's finished shards (the failure-rate guard), so parsing each
    whole DONE file (stats, latencies) every time grew with the square of the shard count. A DONE
    file is written whole by a rename, so its inode, mtime and size name its content.
    """
    path = folder / "DONE"
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _counts:
        done = read_done(folder)
        if done is None:
            return None
        _counts[key] = done.counts
    return _counts[key]
