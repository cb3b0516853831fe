"""Accounting of model calls: per endpoint and per stage tag, thread-safe, mergeable across shards."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_MAX_LATENCIES = 20_000  # keep memory flat on long runs: percentiles from a bounded sample


@dataclass
class Counter:
    calls: int = 0  # successful completions (a cached answer counts as a call and a cache hit)
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    failures: int = 0  # calls that gave up after retries
    cache_hits: int = 0
    rate_limited: int = 0
    empty: int = 0  # replies with empty content
    truncated: int = 0  # finish_reason == "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens: a reasoning model's thinking, where usage reports it
    batched: int = 0  # calls answered by a Batch API batch (at the endpoint's batch price)
    cost: float = 0.0  # dollars spent on requests sent (a cache hit sends none)
    cached_cost: float = 0.0  # what the answers served from cache cost when first asked (same prices)
    latency_s: float = 0.0  # summed latency of successful calls

    def add(self, other: dict[str, Any]) -> None:
        for key, value in other.items():
            if hasattr(self, key):
                setattr(self, key, getattr(self, key) + value)


@dataclass
class RunStats:
    """Counters per endpoint and per (tag, endpoint); latencies per endpoint."""

    endpoints: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    tags: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # A shard's accounting journal (moaa.work.shards.ShardOutput.journal): every record as it happens,
    # so the calls of an attempt that is killed still count when the shard is resumed. An unbuffered
    # binary file: what is written is in the OS once write(2) returns (no flush to pay per call).
    # Records made on an event loop wait for the end of its current step and go as one write
    # (several calls finish in one step); a paid answer's record too, and what was to follow it
    # (the cache's put of that answer: note_paid's `then`) runs once it is written, so the cache
    # never commits an answer the journal lacks. ShardOutput writes what waits before a prompt's row.
    journal: BinaryIO | None = field(default=None, repr=False, compare=False)
    _waiting: list[str] = field(default_factory=list, repr=False, compare=False)
    _after: list[Callable[[], object]] = field(default_factory=list, repr=False, compare=False)
    _drain_scheduled: bool = field(default=False, repr=False, compare=False)
    # Cache keys whose answer an earlier, killed attempt of the shard paid for (and counted): the
    # resumed attempt's cache hit on one of them is the same call, not another one.
    # cache key -> its answer (JSON text; None in journals from before answers were kept there)
    prepaid: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)
    # Batch API batches (moaa.models.batch): "endpoint/local id" -> {endpoint, status, total, completed, failed}
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Retries waiting (note_wait): endpoint -> (until, as time.time(); why), e.g. "HTTP 429, Retry-After 30 s"
    waits: dict[str, tuple[float, str]] = field(default_factory=dict, repr=False, compare=False)

    def note_wait(self, endpoint: str, seconds: float, reason: str) -> None:
        """A retry of `endpoint` waits `seconds` from now (a gauge the progress line shows, never saved)."""
        until = time.time() + seconds
        with self._lock:
            if until > self.waits.get(endpoint, (0.0, ""))[0]:
                self.waits[endpoint] = (until, reason)

    def waiting(self) -> dict[str, tuple[float, str]]:
        """{endpoint: (seconds left, reason)} of the waits not over yet."""
        now = time.time()
        with self._lock:
            return {name: (until - now, why) for name, (until, why) in self.waits.items() if until > now}

    def note_batch(self, key: str, state: dict[str, Any]) -> None:
        """The latest state of one batch (a gauge, not a counter: the progress display shows it)."""
        with self._lock:
            self.batches[key] = dict(state)

    def batch_states(self) -> dict[str, dict[str, int]]:
        """Per status: how many batches and requests are in it."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for state in self.batches.values():
                row = out.setdefault(state["status"], {"batches": 0, "requests": 0})
                row["batches"] += 1
                row["requests"] += int(state.get("total") or 0)
        return out

    def record(self, endpoint: str, tag: str = "", latency: float | None = None, **counts: Any) -> None:
        with self._lock:
            self._log({"e": endpoint, "t": tag, "l": latency, "c": counts})
            self.endpoints[endpoint].add(counts)
            if tag:
                self.tags[f"{tag}|{endpoint}"].add(counts)
            if latency is not None:
                lat = self.latencies[endpoint]
                if len(lat) < _MAX_LATENCIES:
                    lat.append(latency)

    def note_paid(self, key: str, answer: str | None = None, then: Callable[[], object] | None = None) -> None:
        """Journal that the call with cache key `key` was answered (and counted) by this attempt, with
        its answer: the request cache commits in batches, so a kill may lose the last ones there.
        `then` runs once the record is written (at once without a journal)."""
        if self.journal is None:
            if then is not None:
                then()
            return
        if answer is None:
            line = json.dumps({"paid": key}) + "\n"
        else:  # the answer is JSON text: kept as JSON (`ar`), not escaped again into a string (`a`)
            line = f'{{"paid": {json.dumps(key)}, "ar": {answer}}}\n'
        with self._lock:
            self._waiting.append(line)
            if then is not None:
                self._after.append(then)
            self._schedule_locked()

    def journal_record(self, entry: dict[str, Any]) -> None:
        """Queue a record of the caller's own for the journal (written with the next write_journal)."""
        with self._lock:
            if self.journal is not None:
                self._waiting.append(json.dumps(entry) + "\n")

    def write_journal(self) -> None:
        """Write the records still waiting (before a prompt's row is written, and at a shard's end)."""
        with self._lock:
            self._drain_locked()

    def take_prepaid(self, key: str) -> bool:
        """True once for a key an earlier attempt paid for: the caller records nothing for it."""
        with self._lock:
            if key in self.prepaid:
                del self.prepaid[key]
                return True
            return False

    def prepaid_answer(self, key: str) -> str | None:
        """The journaled answer (JSON text) of a call an earlier attempt paid for, if kept."""
        with self._lock:
            return self.prepaid.get(key)

    def _log(self, entry: dict[str, Any]) -> None:  # with self._lock held
        if self.journal is None:
            return
        self._waiting.append(json.dumps(entry) + "\n")
        self._schedule_locked()

    def _schedule_locked(self) -> None:
        """Write what waits at the end of the event loop's step (once per step), or at once off a loop."""
        if self._drain_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop (a thread's client): at once
            self._drain_locked()
            return
        self._drain_scheduled = True
        loop.call_soon(self.write_journal)

    def _drain_locked(self) -> None:
        self._drain_scheduled = False
        if self._waiting:
            self._write_locked("".join(self._waiting).encode())
            self._waiting.clear()
        after, self._after = self._after, []
        for then in after:  # written (or the journal stopped): what was to follow the records now may
            then()

    def _write_locked(self, data: bytes) -> None:
        if self.journal is None or self.journal.closed:  # closed: the shard has finished
            return
        try:
            if self.journal.write(data) != len(data):  # in the OS once written: survives a SIGKILL
                raise OSError("a short write (is the disk full?)")
        except (OSError, ValueError) as exc:  # a full disk stops the journal, never the call
            log.warning("accounting journal stopped (%s); totals of a resumed run may be low", exc)
            self.journal = None

    def replay(self, lines: Iterable[dict[str, Any]]) -> dict[str, str | None]:
        """Fold in a journal's records; the cache keys it says were paid for, with their answers."""
        paid: dict[str, str | None] = {}
        for entry in lines:
            if "paid" in entry:
                answer = entry.get("a")  # journals before the answer was kept as JSON (`ar`)
                paid[entry["paid"]] = json.dumps(entry["ar"], ensure_ascii=False) if "ar" in entry else answer
            else:
                self.record(entry["e"], entry["t"], entry["l"], **entry["c"])
        return paid

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "endpoints": {k: asdict(v) for k, v in self.endpoints.items()},
                "tags": {k: asdict(v) for k, v in self.tags.items()},
                "latencies": {k: list(v) for k, v in self.latencies.items()},
            } | ({"batches": {k: dict(v) for k, v in self.batches.items()}} if self.batches else {})

    def merge(self, data: dict[str, Any]) -> None:
        """Fold in another RunStats' `to_dict()` (a shard's result)."""
        with self._lock:
            for name, counts in data.get("endpoints", {}).items():
                self.endpoints[name].add(counts)
            for name, counts in data.get("tags", {}).items():
                self.tags[name].add(counts)
            self.batches.update(data.get("batches", {}))
            for name, values in data.get("latencies", {}).items():
                room = _MAX_LATENCIES - len(self.latencies[name])
                self.latencies[name].extend(values[: max(room, 0)])

    def totals(self) -> Counter:
        total = Counter()
        with self._lock:
            for counter in self.endpoints.values():
                total.add(asdict(counter))
        return total

    def percentiles(self, endpoint: str) -> dict[str, float]:
        with self._lock:
            values = sorted(self.latencies.get(endpoint, []))
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": values[-1]}

    def summary(self) -> dict[str, Any]:
        """Per-endpoint counters with latency percentiles; no raw latencies."""
        out = {}
        for name, counter in sorted(self.to_dict()["endpoints"].items()):
            out[name] = counter | {"latency": self.percentiles(name)}
        return out


def call_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None, price_out: float | None) -> float:
    """Dollars for one call from prices per million input/output tokens (0 when unpriced)."""
    return (prompt_tokens * (price_in or 0.0) + completion_tokens * (price_out or 0.0)) / 1e6
