"""Shard files on disk: the unit of work a stage task reads and writes.

A stage's work folder holds `inputs/shard-NNNNN.jsonl` (prompts) and, per shard, an output folder
`shard-NNNNN/` with `rows.jsonl`, `trace.jsonl`, `failures.jsonl`, `calls.jsonl` (the accounting
journal of every attempt) and, once complete, `DONE` (its moaa.work.shard_result.ShardResult as JSON,
written atomically).
One process writes a shard folder at a time (moaa.work.stage_shard.run_shard holds its `.moaa.lock`).
Rows are appended and flushed one prompt at a time, so a killed process loses at most the prompts
in flight; on resume the prompt ids already in `rows.jsonl` are skipped, the failures of the
unfinished attempt are asked again, and a torn last line is cut off.

Damage is never a traceback: a DONE that does not read as a shard's result (empty, torn, garbage,
an older layout) makes the shard unfinished, and a line of `rows`, `failures`, `trace` or `calls`
that is not a record is dropped when the shard starts (`repair_jsonl`), its prompt asked again (the
request cache keeps the answers); each is one warning naming the shard and file. A damaged line
met while a finished shard is read (a version being written) is one DamagedFile line, and the
shard is redone by the next run.

Failures are transient or permanent (moaa.rows.is_transient). Before a run, `reopen_failures`
decides which failed prompts it asks again: a finished shard's transient ones (its DONE goes; the
calls it paid for stay in `calls.jsonl`, so the totals keep them), keeping the permanent ones (400,
content filter); every one of an unfinished shard (a stopped or killed run: fixing the cause and
re-running completes them) or of a stage that made no row (no version holds them). A prompt is in
`rows.jsonl` or `failures.jsonl`, never both, never twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from moaa.errors import DamagedFile
from moaa.fileio import write_json_atomic, write_jsonl_atomic
from moaa.models.stats import RunStats
from moaa.public import scrub_text
from moaa.rows import failure_is_transient
from moaa.work.shard_result import ShardCounts, ShardResult

log = logging.getLogger(__name__)

OUTPUT_FILES = ("rows", "trace", "failures")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn (unterminated) last line is ignored. A line that is not a JSON
    object (moaa writes nothing else) raises DamagedFile naming the file and line."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return  # torn write from a killed process
            if not line.strip():
                continue
            record = _record(line)
            if record is None:
                if path.stem in (*OUTPUT_FILES, "calls"):
                    redo_shard(path.parent)  # the next run repairs the file as the shard starts
                raise DamagedFile(
                    f"{path}:{number}: moaa's work file is damaged (not a JSON record); run the same command "
                    "again: its shard is redone (its rows and cached answers are kept)",
                    path,
                )
            yield record


def _record(line: bytes) -> dict[str, Any] | None:
    """The JSON object on a line, or None when the line is not one (garbage, a torn middle, not UTF-8)."""
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    return record if isinstance(record, dict) else None


_warned: set[tuple[str, int, int]] = set()  # (path, size, mtime) of damaged files already reported


def report_damage(path: Path, what: str, consequence: str) -> None:
    """One warning per damaged work file (per version of it): which shard, which file, what happens now."""
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(path), -1, -1)
    if key in _warned:
        return
    _warned.add(key)
    shard = f"{path.parent.parent.name}/{path.parent.name}"
    log.warning("shard %s's work file %s is damaged (%s): %s", shard, path.name, what, consequence)


REDO = "redoing the shard: its prompts without a row on disk are asked again (cached answers kept)"


def repair_jsonl(path: Path, valid: Callable[[dict[str, Any]], bool], consequence: str = REDO) -> int:
    """Rewrite `path` without its damaged lines (not a JSON object, or not `valid`), reporting them;
    how many went. A torn last line is left for the caller (a killed write, not damage)."""
    if not path.exists():
        return 0
    good: list[dict[str, Any]] = []
    bad: list[int] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n") or not line.strip():
                continue
            record = _record(line)
            if record is None or not valid(record):
                bad.append(number)
            else:
                good.append(record)
    if bad:
        report_damage(path, f"{len(bad)} line(s) that are not records, first at line {bad[0]}", consequence)
        write_jsonl_atomic(path, good)
    return len(bad)


def _has_prompt_id(record: dict[str, Any]) -> bool:
    return isinstance(record.get("prompt_id"), str) and bool(record["prompt_id"])


def _journal_record(record: dict[str, Any]) -> bool:
    if "k" in record:  # a finished prompt's counters (ShardOutput.add)
        return isinstance(record.get("p"), str) and isinstance(record["k"], dict)
    return "paid" in record or ("e" in record and isinstance(record.get("c"), dict))


def _calls_only(records: Iterable[dict[str, Any]], counted: dict[str, dict[str, int]]) -> Iterator[dict[str, Any]]:
    """A journal's call records; its prompts' counter records go into `counted` (the last per prompt)."""
    for record in records:
        if "k" in record:
            counted[record["p"]] = record["k"]
        else:
            yield record


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
            repair_jsonl(self.path(name), _has_prompt_id)  # a damaged line's prompt is asked again
        # Failures on disk are done: reopen_failures, before the run, took out those to ask again.
        self.kept_failures = sum(1 for _ in read_jsonl(self.path("failures")))
        for name in ("rows", "failures"):
            self.done_ids.update(r["prompt_id"] for r in read_jsonl(self.path(name)))
        self._keep_trace_of_done()
        self._files = {name: self.path(name).open("a", encoding="utf-8") for name in OUTPUT_FILES}
        self._stats: RunStats | None = None  # whose journal is calls.jsonl (see journal)
        # The counters of the prompts already on disk, as their attempts journaled them (see journal).
        self.resumed_counters: Counter[str] = Counter()

    def journal(self, stats: RunStats) -> RunStats:
        """Journal `stats` to `calls.jsonl` as calls happen; returns the earlier attempts' accounting.

        A killed attempt's calls (those of its finished prompts and of the prompts in flight) are in
        the journal; the resumed attempt gets the keys they paid for as `stats.prepaid`, so the cache
        answering them again is not counted twice. DONE holds the sum.
        """
        path = self.folder / "calls.jsonl"
        self._truncate_torn_tail(path)
        repair_jsonl(path, _journal_record, "the calls of its damaged lines are missing from the totals")
        earlier = RunStats()
        counted: dict[str, dict[str, int]] = {}  # prompt id -> its counters (the last attempt's)
        stats.prepaid = earlier.replay(_calls_only(read_jsonl(path), counted))
        for prompt_id, counters in counted.items():
            if prompt_id in self.done_ids:  # a prompt asked again (a transient failure) counts anew
                self.resumed_counters.update(counters)
        stats.journal = self._files["calls"] = path.open("ab", buffering=0)  # see RunStats.journal
        self._stats = stats
        return earlier

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.jsonl"

    @property
    def complete(self) -> bool:
        return (self.folder / "DONE").exists()

    def add(
        self, rows: list[dict], trace: list[dict], failures: list[dict], counted: tuple[str, dict] | None = None
    ) -> None:
        """Record one prompt's results; trace first so a row never lacks its trace. Secrets are
        scrubbed here (a server may echo the key in an error or an answer). The journal's records
        go first: a row on disk is never without the accounting of its calls, nor (`counted`: its
        id and counters) without what it adds to the shard's counters."""
        if self._stats is not None:
            if counted is not None:
                self._stats.journal_record({"p": counted[0], "k": counted[1]})
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
            repair_jsonl(path, _has_prompt_id)
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
    done = read_done(folder)
    if repair_jsonl(path, _has_prompt_id) and done is not None:
        (folder / "DONE").unlink()  # redone: a damaged failure's prompt is asked again
        done = None
    rows = list(read_jsonl(path))
    again = [r for r in rows if done is None or everything or failure_is_transient(r)]
    if not again:
        return {"transient": 0, "other": 0, "permanent": len(rows)}
    if done is not None:  # its calls stay in calls.jsonl: the re-run's DONE sums every attempt
        (folder / "DONE").unlink()
    write_jsonl_atomic(path, [r for r in rows if r not in again])
    transient = sum(1 for r in again if failure_is_transient(r))
    return {"transient": transient, "other": len(again) - transient, "permanent": len(rows) - len(again)}


def read_done(folder: Path) -> ShardResult | None:
    """A finished shard's result (from its DONE file), or None while it is unfinished.

    A DONE that does not read as a shard's result (empty, torn, garbage, or an older layout without
    its counts) counts as unfinished, with a warning: the shard is redone, its rows on disk kept."""
    path = folder / "DONE"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    problem = _done_problem(record)
    if problem:
        report_damage(path, problem, REDO)
        return None
    return ShardResult.from_dict(record)


def _done_problem(record: Any) -> str:
    """What is wrong with a DONE file's JSON ('' when it is a shard's result)."""
    if not isinstance(record, dict):
        return "not a JSON object" if record is not None else "not JSON (empty, torn or garbage)"
    counts = record.get("counts")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), int) for k in ("prompts", "rows", "failed")):
        return "no counts of prompts, rows and failures: written by an older moaa"
    if not isinstance(record.get("stats", {}), dict) or not isinstance(counts.get("dropped", {}), dict):
        return "its stats or drops are not records"
    return ""


def redo_shard(folder: Path) -> None:
    """Make a finished shard unfinished: the next run redoes it (rows on disk and cached answers kept)."""
    (folder / "DONE").unlink(missing_ok=True)


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
