"""A version's configs as paged, filtered tables, read a parquet row group at a time.

    table = config_table(Path("data/demo/v3"), "sft")
    query = Query.of("sft", {"model": "qwen-a", "q": "paris"})
    page = read_page(table, query, page=0, size=50)      # page.rows, page.total
    found = find_row(table, "p7")                         # (position, row) or None

Nothing is loaded whole: a page without a filter reads the one or two row groups it falls in (the
parquet footer says where each starts); a filter reads only the columns it tests, row group by row
group, keeps the matching row numbers (8 bytes each) and reads the page's rows from their groups.
Matches are cached per version and query (a few, least recently used first out), so paging a
filtered table, and next / previous on a row page, re-read nothing. A row is found by its prompt id
through a PromptIndex (which row groups hold each id), built once a version, in the background when
its page is first opened. Versions are immutable, so what is read once of a version stays true
(keyed by its manifest's identity, should the folder be rewritten).

Filters (each applies to the configs that have its column): split, method, model (any model of an
SFT row, either side of a pair, a trace step's), category, verdict (the `verification` column's
status, where the version has one: SFT rows `pass`, `fail`, `unverifiable`, `unchecked`; pairs
`chosen:pass`, `rejected:fail`, ...), stage, kind, reason (a failure's), truncated (a row whose
prompt had an answer cut at max_tokens in its stage; a trace step cut so), score range (a pair's
chosen score, a step's score), margin (a pair's), review decision, and text search (`q`:
case-insensitive, in every text of the row).
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.dataset.columns import shard_files
from moaa.dataset.manifest import MANIFEST_NAME
from moaa.view.row_filters import VERDICTS, Query, columns_for, row_mask

_CACHE_ENTRIES = 16


@dataclass(frozen=True)
class Shard:
    path: Path
    split: str
    start: int  # the config's row number of its first row
    groups: tuple[int, ...]  # rows per row group

    def open(self) -> Any:
        """The parquet file (its footer parsed again: ~1 ms for a 50,000-row shard; kept parsed, the
        footers of a million trace rows would hold ~16 MiB)."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path)

    def group_starts(self) -> list[int]:
        starts, at = [], self.start
        for n in self.groups:
            starts.append(at)
            at += n
        return starts


@dataclass(frozen=True)
class ConfigTable:
    """One config of a version: where its rows are (the parquet footers only)."""

    version_dir: Path
    config: str
    shards: tuple[Shard, ...]
    columns: tuple[str, ...]
    schema: Any

    @property
    def rows(self) -> int:
        return sum(sum(s.groups) for s in self.shards)

    def has(self, column: str) -> bool:
        return column in self.columns

    def locate(self, position: int) -> tuple[Shard, int, int]:
        """(shard, row group, offset in it) of the config's row number `position`."""
        for shard in self.shards:
            starts = shard.group_starts()
            end = starts[-1] + shard.groups[-1] if starts else shard.start
            if shard.start <= position < end:
                group = bisect.bisect_right(starts, position) - 1
                return shard, group, position - starts[group]
        raise IndexError(position)

    def read_group(self, shard: Shard, group: int, columns: list[str] | None = None) -> Any:
        with shard.open() as file:
            return file.read_row_group(group, columns=columns)

    def groups(self, columns: list[str] | None, split: str = "") -> Iterator[tuple[int, Shard, Any]]:
        """(first row number, shard, table) of every row group, only `columns`, only `split` when given."""
        for shard in self.shards:
            if split and shard.split != split:
                continue
            with shard.open() as file:
                for group, start in enumerate(shard.group_starts()):
                    yield start, shard, file.read_row_group(group, columns=columns)


_tables: OrderedDict[tuple, ConfigTable] = OrderedDict()
_matches: OrderedDict[tuple, array] = OrderedDict()
_facets: OrderedDict[tuple, dict[str, list[str]]] = OrderedDict()
_truncated: OrderedDict[tuple, dict[str, frozenset[str]]] = OrderedDict()
_indexes: OrderedDict[tuple, Any] = OrderedDict()
_prefetched: set[tuple] = set()
_cache_lock = threading.Lock()


def _identity(version_dir: Path) -> tuple:
    """The version folder as it is now: a rewritten folder (deleted and written again) reads afresh."""
    stat = (Path(version_dir) / MANIFEST_NAME).stat()
    return (str(Path(version_dir).resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _cached(cache: OrderedDict, key: tuple, make, entries: int = _CACHE_ENTRIES):
    with _cache_lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()
    with _cache_lock:
        cache[key] = value
        while len(cache) > entries:
            cache.popitem(last=False)
    return value


def config_table(version_dir: Path, config: str) -> ConfigTable:
    """The config's shards and row groups (read from the parquet footers once per version)."""
    return _cached(_tables, (_identity(version_dir), config), lambda: _read_table(Path(version_dir), config), 64)


def _read_table(version_dir: Path, config: str) -> ConfigTable:
    import pyarrow.parquet as pq

    shards, at, schema = [], 0, None
    for path in shard_files(version_dir, config):
        with pq.ParquetFile(path) as file:
            meta = file.metadata
            groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
            schema = schema or file.schema_arrow
        shards.append(Shard(path, path.name.partition("-")[0], at, groups))
        at += sum(groups)
    columns = tuple(schema.names) if schema is not None else ()
    return ConfigTable(Path(version_dir), config, tuple(shards), columns, schema)


@dataclass
class Page:
    rows: list[dict[str, Any]]  # each with `_position` (its row number) and `_split`
    total: int  # rows matching the query
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def read_page(
    table: ConfigTable, query: Query, page: int = 0, size: int = 50, decided: Mapping[str, str] | None = None
) -> Page:
    """Rows `page * size` onward of those matching `query` (`decided`: {prompt_id: decision} of the review)."""
    if query:
        positions = matches(table, query, decided)
        total = len(positions)
        wanted = list(positions[page * size : (page + 1) * size])
    else:
        total = table.rows
        wanted = list(range(page * size, min((page + 1) * size, total)))
    return Page(rows_at(table, wanted), total, page, size)


def rows_at(table: ConfigTable, positions: list[int], columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows at these row numbers, in order, each group read once."""
    import pyarrow as pa

    by_group: dict[tuple[int, int], list[tuple[int, int]]] = {}
    shards = {}
    for order, position in enumerate(positions):
        shard, group, offset = table.locate(position)
        key = (table.shards.index(shard), group)
        shards[key] = shard
        by_group.setdefault(key, []).append((order, offset))
    out: list[dict[str, Any] | None] = [None] * len(positions)
    for key, wanted in by_group.items():
        shard = shards[key]
        got = table.read_group(shard, key[1], columns).take(pa.array([offset for _, offset in wanted]))
        for (order, _), row in zip(wanted, got.to_pylist(), strict=True):
            out[order] = row | {"_position": positions[order], "_split": shard.split}
    return [row for row in out if row is not None]


def matches(table: ConfigTable, query: Query, decided: Mapping[str, str] | None = None) -> array:
    """The row numbers matching `query`, in file order (cached per version, config and query)."""
    decisions = tuple(sorted(decided.items())) if query.decision and decided else ()
    key = (_identity(table.version_dir), table.config, query, hash(decisions))
    return _cached(_matches, key, lambda: _scan(table, query, dict(decisions)))


def _scan(table: ConfigTable, query: Query, decided: dict[str, str]) -> array:
    import pyarrow.compute as pc

    needed = columns_for(table, query)
    truncated = truncated_ids(table.version_dir, table.config) if query.truncated else frozenset()
    found = array("q")
    for start, _, group in table.groups(needed or ["prompt_id"], query.split):
        mask = row_mask(table.config, group, query, truncated, decided)
        if mask is None:
            found.extend(range(start, start + group.num_rows))
        else:
            found.extend(start + i for i in pc.indices_nonzero(mask).to_pylist())
    return found


def truncated_ids(version_dir: Path, config: str) -> frozenset[str]:
    """Prompt ids of `config` (sft, dpo) with a trace step cut at max_tokens in its stage (sft; the
    preference stages for dpo), from the trace's prompt_id, stage and finish_reason columns (once a version)."""
    by = _cached(_truncated, (_identity(version_dir),), lambda: _truncated_by_config(Path(version_dir)))
    return by.get(config, frozenset())


def _truncated_by_config(version_dir: Path) -> dict[str, frozenset[str]]:
    import pyarrow.compute as pc

    trace = config_table(version_dir, "trace")
    found: dict[str, set[str]] = {"sft": set(), "dpo": set()}
    for _, _, t in trace.groups(["prompt_id", "stage", "finish_reason"]):
        cut = t.filter(pc.fill_null(pc.equal(t["finish_reason"], "length"), False))
        for pid, stage in zip(cut["prompt_id"].to_pylist(), cut["stage"].to_pylist(), strict=True):
            found["sft" if stage == "sft" else "dpo"].add(pid)
    return {k: frozenset(v) for k, v in found.items()}


@dataclass(frozen=True)
class PromptIndex:
    """Which row groups hold each prompt id: per row group its distinct ids, all in two Arrow arrays
    (~28 bytes a prompt of 16-character ids; ~55 for a trace, whose blocks cross group borders), so a
    row is found by one kernel over the ids and a read of its groups, not by a scan of the config
    (a million trace rows at 100,000 prompts)."""

    ids: Any  # pyarrow StringArray: each row group's distinct prompt ids, group after group
    groups: Any  # pyarrow Int32Array: the row group (numbered across shards) of each entry
    starts: tuple[tuple[int, int, int], ...]  # per numbered group: (shard index, group in it, first row number)

    def locations(self, prompt_id: str) -> list[tuple[int, int, int]]:
        import pyarrow.compute as pc

        hits = pc.indices_nonzero(pc.equal(self.ids, prompt_id))
        return [self.starts[g] for g in sorted(set(self.groups.take(hits).to_pylist()))]


def prompt_index(table: ConfigTable) -> PromptIndex:
    """The config's PromptIndex (one scan of its prompt_id column, once a version)."""
    return _cached(_indexes, (_identity(table.version_dir), table.config), lambda: _build_index(table), 64)


def _build_index(table: ConfigTable) -> PromptIndex:
    import pyarrow as pa
    import pyarrow.compute as pc

    ids, groups, starts = [], [], []
    for shard_index, shard in enumerate(table.shards):
        with shard.open() as file:
            for group, start in enumerate(shard.group_starts()):
                distinct = pc.unique(file.read_row_group(group, columns=["prompt_id"])["prompt_id"].combine_chunks())
                ids.append(distinct)
                groups.append(pa.array([len(starts)] * len(distinct), pa.int32()))
                starts.append((shard_index, group, start))
    if not ids:
        return PromptIndex(pa.array([], pa.string()), pa.array([], pa.int32()), ())
    return PromptIndex(pa.concat_arrays(ids), pa.concat_arrays(groups), tuple(starts))


def _positions_of(table: ConfigTable, prompt_id: str, first: bool = False) -> list[int]:
    """The row numbers of `prompt_id`'s rows (only the first with `first`), via the PromptIndex."""
    import pyarrow.compute as pc

    positions: list[int] = []
    for shard_index, group, start in prompt_index(table).locations(prompt_id):
        t = table.read_group(table.shards[shard_index], group, ["prompt_id"])
        positions += [start + i for i in pc.indices_nonzero(pc.equal(t["prompt_id"], prompt_id)).to_pylist()]
        if first and positions:
            return positions[:1]
    return positions


def find_row(table: ConfigTable, prompt_id: str) -> tuple[int, dict[str, Any]] | None:
    """(row number, row) of the config's row for `prompt_id` (its first), or None."""
    found = _positions_of(table, prompt_id, first=True)
    return (found[0], rows_at(table, found)[0]) if found else None


def rows_of(table: ConfigTable, prompt_id: str) -> list[dict[str, Any]]:
    """Every row of the config for `prompt_id` (a prompt's trace steps), in file order."""
    positions = _positions_of(table, prompt_id)
    return rows_at(table, positions) if positions else []


def prefetch(version_dir: Path, configs: list[str]) -> None:
    """Build the version's PromptIndexes in a background thread (once), so the first row opened from a
    table does not wait for them; the pages that need one build it themselves if it is not ready."""
    key = _identity(version_dir)
    with _cache_lock:
        if key in _prefetched:
            return
        _prefetched.add(key)

    def build() -> None:
        for config in configs:
            prompt_index(config_table(version_dir, config))

    threading.Thread(target=build, name="moaa-view-index", daemon=True).start()


def prompt_ids_at(table: ConfigTable, positions: list[int]) -> list[str]:
    return [row["prompt_id"] for row in rows_at(table, positions, ["prompt_id"])]


def neighbours(
    table: ConfigTable, position: int, query: Query, decided: Mapping[str, str] | None = None
) -> tuple[str | None, str | None, int, int]:
    """(previous prompt id, next prompt id, this row's place from 1, rows) among the rows matching `query`."""
    positions: Any = matches(table, query, decided) if query else range(table.rows)
    place = bisect.bisect_left(positions, position)
    if place >= len(positions) or positions[place] != position:
        return None, None, 0, len(positions)
    around = [p for p in (place - 1, place + 1) if 0 <= p < len(positions)]
    ids = dict(zip(around, prompt_ids_at(table, [positions[p] for p in around]), strict=True))
    return ids.get(place - 1), ids.get(place + 1), place + 1, len(positions)


def facets(table: ConfigTable) -> dict[str, list[str]]:
    """The values each select filter offers (methods, models, categories, stages, kinds, reasons)."""
    key = (_identity(table.version_dir), table.config)
    return _cached(_facets, key, lambda: _read_facets(table), 64)


_FACET_COLUMNS = {"sft": ("method", "category", "models"), "dpo": ("chosen_model", "rejected_model"),
                  "trace": ("stage", "kind", "model"), "failures": ("stage", "reason"),
                  "prompts": ("category",)}  # fmt: skip
_MAX_FACET_VALUES = 200


def _read_facets(table: ConfigTable) -> dict[str, list[str]]:
    import pyarrow.compute as pc

    columns = [c for c in _FACET_COLUMNS[table.config] if table.has(c)]
    seen: dict[str, set[str]] = {c: set() for c in columns}
    for _, _, t in table.groups(columns):
        for name in columns:
            values = pc.list_flatten(t[name]) if name == "models" else t[name]
            if len(seen[name]) <= _MAX_FACET_VALUES:
                seen[name].update(v for v in pc.unique(values).to_pylist() if v not in (None, ""))
    out = {name: sorted(values)[:_MAX_FACET_VALUES] for name, values in seen.items()}
    if table.config in ("sft", "dpo", "trace"):
        models = set(out.pop("models", [])) | set(out.pop("chosen_model", [])) | set(out.pop("rejected_model", []))
        out["model"] = sorted(models | set(out.get("model", [])))
    if table.has("verification"):
        out["verdict"] = list(VERDICTS) if table.config == "sft" else [
            f"{side}:{v}" for side in ("chosen", "rejected") for v in VERDICTS]  # fmt: skip
    return out


def missing_ids(version_dir: Path, wanted: dict[str, set[str]]) -> dict[str, list[str]]:
    """{config: the prompt ids of `wanted` that the config has no row for} (configs with none missing left out)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for config, ids in wanted.items():
        if not ids:
            continue
        found: set[str] = set()
        table = config_table(version_dir, config)
        values = pa.array(sorted(ids), pa.string())
        for _, _, t in table.groups(["prompt_id"]):
            found.update(t["prompt_id"].filter(pc.is_in(t["prompt_id"], value_set=values)).to_pylist())
        if ids - found:
            out[config] = sorted(ids - found)
    return out
