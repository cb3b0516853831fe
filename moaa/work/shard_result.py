"""What a finished shard reports, as typed values: its counts and its accounting.

    result = read_done(out)                      # moaa.work.shards: a ShardResult, or None
    result.counts.rows, result.counts.finished   # typed fields, no string keys

A shard's `DONE` file is the only place they are JSON (`to_dict` / `from_dict`, the file's layout
unchanged: stage, shard, counts, stats, attempt_stats, seconds, finished_at). `ShardTally` counts a
running shard prompt by prompt and is frozen into `ShardCounts` when the shard ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from moaa.rows import TraceStep


@dataclass(frozen=True)
class ShardCounts:
    """A shard's prompts: rows made, failures kept, drops by reason, and the stage's counters.

    `resumed`: prompts already on disk when this attempt started (rows and permanent failures).
    `counters`: what the engine or preference stage counted (moaa.engine.PromptResult.counters),
    plus `steps` (model answers) and `truncated` (answers cut at max_tokens)."""

    prompts: int = 0
    resumed: int = 0
    rows: int = 0
    failed: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Prompts with an outcome: a row, a failure or a drop."""
        return self.rows + self.failed + sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "resumed": self.resumed, "rows": self.rows, "failed": self.failed,
                "dropped": dict(self.dropped), "counters": dict(self.counters)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardCounts:
        # Older DONE files lack `resumed` and `counters`.
        return cls(
            prompts=data.get("prompts", 0), resumed=data.get("resumed", 0), rows=data.get("rows", 0),
            failed=data.get("failed", 0), dropped=dict(data.get("dropped", {})),
            counters=dict(data.get("counters", {})),
        )  # fmt: skip


@dataclass(frozen=True)
class ShardResult:
    """One finished shard: its counts and the accounting of its model calls (RunStats.to_dict form).

    `stats` sums every attempt's calls (a killed or reopened shard's earlier ones included);
    `attempt_stats` is this attempt's alone (the run summary's "this run"). `skipped`: found DONE,
    not run (never written to the file)."""

    stage: str
    shard: str
    counts: ShardCounts
    stats: dict[str, Any]
    attempt_stats: dict[str, Any]
    seconds: float
    finished_at: float
    skipped: bool = False

    def without_stats(self) -> ShardResult:
        """The same result without the accounting: small enough for a Prefect task to return (DONE keeps it)."""
        return replace(self, stats={}, attempt_stats={})

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "shard": self.shard,
            "counts": self.counts.to_dict(),
            "stats": self.stats,
            "attempt_stats": self.attempt_stats,
            "seconds": self.seconds,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardResult:
        # Older DONE files lack `attempt_stats` (then every call was this attempt's) and `finished_at`.
        stats = data.get("stats", {})
        return cls(
            stage=data.get("stage", ""), shard=data.get("shard", ""),
            counts=ShardCounts.from_dict(data.get("counts", {})), stats=stats,
            attempt_stats=data.get("attempt_stats", stats), seconds=data.get("seconds", 0.0),
            finished_at=data.get("finished_at", 0.0),
        )  # fmt: skip


@dataclass
class ShardTally:
    """The counts of a running shard, added to prompt by prompt (`frozen` gives its ShardCounts)."""

    prompts: int
    resumed: int
    rows: int
    failed: int
    dropped: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)

    def add(
        self, rows: int, failed: int, dropped: str | None, counters: Mapping[str, int], trace: Sequence[TraceStep]
    ) -> None:
        """One prompt's outcome: its rows, failures, drop reason (if dropped), counters and trace."""
        self.rows += rows
        self.failed += failed
        if dropped:
            self.dropped[dropped] += 1
        self.counters.update(self.counted(counters, trace))

    @staticmethod
    def counted(counters: Mapping[str, int], trace: Sequence[TraceStep]) -> dict[str, int]:
        """What one prompt adds to the shard's counters: the stage's own, plus every model answer of the
        prompt and those cut at max_tokens (finish_reason "length"), whatever the cache served. A shard
        journals it with the prompt's row, so a resumed shard counts its finished prompts as a clean run."""
        out = dict(counters)
        out["steps"] = out.get("steps", 0) + len(trace)
        out["truncated"] = out.get("truncated", 0) + sum(t.finish_reason == "length" for t in trace)
        return out

    @property
    def finished(self) -> int:
        return self.rows + self.failed + sum(self.dropped.values())

    def frozen(self) -> ShardCounts:
        return ShardCounts(self.prompts, self.resumed, self.rows, self.failed, dict(self.dropped), dict(self.counters))
