"""A version's parquet columns read in row-group batches with pyarrow, and the few reductions the
card and the run report make of them.

    counts = GroupSums(["stage", "kind"])
    for batch in read_batches(Path("data/local-moa/v3"), "trace", ["stage", "kind"]):
        counts.add(pylists(batch, ["stage", "kind"]))

pyarrow is already loaded by the version write, so the card and the report that follow it cost no
other library: polars (a lazy frame per config) added ~27 MiB of imports and ~50 MiB of streaming
buffers at the end of a 100,000-prompt run, its peak. One row group at a time, only the columns
asked for, so a version of any size is summarised in bounded memory (the lengths and scores kept
for medians are numbers, 8 bytes a row). Only pyarrow's reading and its array kernels are used:
its scalars, group_by and numpy conversion import pandas (~36 MiB).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def shard_files(version_dir: Path, config: str) -> list[Path]:
    """A config's parquet shards, every split, in file-name order (test before train)."""
    return sorted((Path(version_dir) / "data" / config).glob("*.parquet"))


def read_batches(version_dir: Path, config: str, columns: list[str] | None = None) -> Iterator[Any]:
    """The config's rows as pyarrow RecordBatches (a row group each), only `columns` (None: all)."""
    import pyarrow.parquet as pq

    for path in shard_files(version_dir, config):
        with pq.ParquetFile(path) as file:
            for index in range(file.num_row_groups):
                yield from file.read_row_group(index, columns=columns).to_batches()


def head(version_dir: Path, config: str, n: int) -> list[dict[str, Any]]:
    """The config's first `n` rows as dicts, in file order."""
    rows: list[dict[str, Any]] = []
    for batch in read_batches(version_dir, config):
        rows += batch.slice(0, n - len(rows)).to_pylist()
        if len(rows) >= n:
            break
    return rows


def message_lengths(messages: Any, pick: int, missing: int | None = None) -> list[int | None]:
    """Characters of each row's `pick`-th message content (0: first, -1: last) in a batch's
    messages column; `missing` where a row has no such message or its content is null."""
    import pyarrow.compute as pc

    offsets, valid = messages.offsets.to_pylist(), messages.is_valid().to_pylist()
    lengths = pc.utf8_length(messages.values.field("content")).to_pylist()
    out: list[int | None] = []
    for row, ok in enumerate(valid):
        start, end = offsets[row], offsets[row + 1]
        n = lengths[end - 1 if pick == -1 else start] if ok and end > start else None
        out.append(missing if n is None else n)
    return out


class Values:
    """Numbers gathered batch by batch (None left out), then described: mean, median, p95, min, max."""

    def __init__(self) -> None:
        self.values = array("d")  # 8 bytes a number

    def add(self, values: list[Any]) -> None:
        self.values.extend(v for v in values if v is not None)

    def describe(self) -> dict[str, float | None]:
        """mean, median (the middle two averaged), p95 (the nearest rank, as polars' default), min, max."""
        values = sorted(self.values)
        if not values:
            return dict.fromkeys(("mean", "median", "p95", "min", "max"))
        n = len(values)
        median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
        return {"mean": math.fsum(values) / n, "median": median, "p95": values[math.floor(0.95 * (n - 1) + 0.5)],
                "min": values[0], "max": values[-1]}  # fmt: skip


class GroupSums:
    """Rows per group of `keys`, with sums and non-null counts of numeric columns, over batches.

    In Python over each batch's values: pyarrow's group_by, its scalars and its numpy conversion
    all import pandas (~36 MiB), and a version's groups are few (stages, kinds, models)."""

    def __init__(self, keys: list[str], sums: tuple[str, ...] = ()) -> None:
        self.keys, self.sums = keys, sums
        self.groups: dict[tuple, dict[str, float]] = {}

    def add(self, columns: dict[str, list[Any]]) -> None:
        """Fold in one batch's columns (name: values), the keys and the sums each."""
        keys = zip(*(columns[k] for k in self.keys), strict=True)
        numbers = [columns[c] for c in self.sums]
        for row, key in enumerate(keys):
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = {"rows": 0} | {f"{c}_{t}": 0 for c in self.sums for t in ("sum", "count")}
            group["rows"] += 1
            for column, values in zip(self.sums, numbers, strict=True):
                if (value := values[row]) is not None:
                    group[f"{column}_sum"] += value
                    group[f"{column}_count"] += 1

    def sorted(self) -> list[tuple[tuple, dict[str, float]]]:
        """(group, totals) in key order, a null key first (as polars sorts)."""
        return sorted(self.groups.items(), key=lambda item: tuple((v is not None, v) for v in item[0]))

    def mean(self, totals: dict[str, float], column: str) -> float | None:
        count = totals.get(f"{column}_count", 0)
        return totals[f"{column}_sum"] / count if count else None


def pylists(batch: Any, columns: list[str]) -> dict[str, list[Any]]:
    """The batch's named columns as Python lists."""
    return {c: batch.column(c).to_pylist() for c in columns}
