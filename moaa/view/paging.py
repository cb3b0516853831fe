"""A version's configs as paged, filtered tables, read a parquet row group at a time.

    table = config_table(Path("data/demo/v3"), "sft")
    query = Query.of("sft", {"model": "qwen-a", "q": "paris"})
    page = read_page(table, query, page=0, size=50)      # page.rows, page.total
    found = find_row(table, "p7")                         # (position, row) or None

Nothing is loaded whole: a page without a filter reads the one or two row groups it falls in (the
parquet footer says where each starts); a filter reads only the columns it tests, row group by row
group, keeps the matching row numbers (8 bytes each) and reads the page's rows from their groups.
Matches are cached per version and query (a few, least recently used first out), so paging a
filtered table, and next / previous on a row page, re-read nothing. Versions are immutable, so what
is read once of a version stays true (keyed by its manifest's identity, should the folder be rewritten).

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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from moaa.dataset.columns import shard_files
from moaa.dataset.manifest import MANIFEST_NAME
from moaa.errors import InputError

VERDICTS = ("pass", "fail", "unverifiable", "unchecked")
TEXT_COLUMNS = {"sft": ("messages",), "dpo": ("prompt", "chosen", "rejected"), "trace": ("text",),
                "failures": ("error", "reason")}  # fmt: skip
# The filters each config offers (beyond text search and split).
FILTERS = {
    "sft": ("split", "method", "model", "category", "verdict", "truncated", "decision", "q"),
    "dpo": ("split", "model", "verdict", "truncated", "score_min", "score_max", "margin_min", "decision", "q"),
    "trace": ("split", "stage", "kind", "model", "truncated", "score_min", "score_max", "q"),
    "failures": ("stage", "reason", "q"),
}
DECISION_FILTERS = ("accept", "reject", "flag", "edit", "undecided")
_CACHE_ENTRIES = 16


@dataclass(frozen=True)
class Query:
    """A table's filters; empty strings and None filter nothing."""

    split: str = ""
    method: str = ""
    model: str = ""
    category: str = ""
    verdict: str = ""
    stage: str = ""
    kind: str = ""
    reason: str = ""
    truncated: str = ""  # "yes" or "no"
    score_min: float | None = None
    score_max: float | None = None
    margin_min: float | None = None
    decision: str = ""
    q: str = ""

    @classmethod
    def of(cls, config: str, params: Mapping[str, str]) -> Query:
        """The filters of `params` that `config` offers (others ignored); InputError for a bad value."""
        values: dict[str, Any] = {}
        for name in FILTERS.get(config, ()):
            raw = str(params.get(name) or "").strip()
            if not raw:
                continue
            if name in ("score_min", "score_max", "margin_min"):
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise InputError(f"filter {name}={raw!r} is not a number") from None
            elif name == "truncated" and raw not in ("yes", "no"):
                raise InputError(f"filter truncated={raw!r}: use yes or no")
            elif name == "decision" and raw not in DECISION_FILTERS:
                raise InputError(f"filter decision={raw!r}: use one of {', '.join(DECISION_FILTERS)}")
            else:
                values[name] = raw
        return cls(**values)

    def params(self) -> dict[str, str]:
        """The set filters as URL parameters."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in ("", None):
                out[f.name] = f"{value:g}" if isinstance(value, float) else value
        return out

    def __bool__(self) -> bool:
        return bool(self.params())


@dataclass(frozen=True)
class Shard:
    path: Path
    split: str
    start: int  # the config's row number of its first row
    groups: tuple[int, ...]  # rows per row group

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
        import pyarrow.parquet as pq

        with pq.ParquetFile(shard.path) as file:
            return file.read_row_group(group, columns=columns)

    def groups(self, columns: list[str] | None, split: str = "") -> Iterator[tuple[int, Shard, Any]]:
        """(first row number, shard, table) of every row group, only `columns`, only `split` when given."""
        for shard in self.shards:
            if split and shard.split != split:
                continue
            for group, start in enumerate(shard.group_starts()):
                yield start, shard, self.read_group(shard, group, columns)


_tables: OrderedDict[tuple, ConfigTable] = OrderedDict()
_matches: OrderedDict[tuple, array] = OrderedDict()
_facets: OrderedDict[tuple, dict[str, list[str]]] = OrderedDict()
_truncated: OrderedDict[tuple, dict[str, frozenset[str]]] = OrderedDict()
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

    needed = _columns_for(table, query)
    truncated = truncated_ids(table.version_dir, table.config) if query.truncated else frozenset()
    found = array("q")
    for start, _, group in table.groups(needed or ["prompt_id"], query.split):
        mask = _mask(table.config, group, query, truncated, decided)
        if mask is None:
            found.extend(range(start, start + group.num_rows))
        else:
            found.extend(start + i for i in pc.indices_nonzero(mask).to_pylist())
    return found


def _columns_for(table: ConfigTable, query: Query) -> list[str]:
    wanted = {"prompt_id"}
    config = table.config
    if query.method:
        wanted.add("method")
    if query.category:
        wanted.add("category")
    if query.model:
        wanted |= {"sft": {"models"}, "dpo": {"chosen_model", "rejected_model"}}.get(config, {"model"})
    if query.verdict:
        wanted.add("verification")
    if query.stage:
        wanted.add("stage")
    if query.kind:
        wanted.add("kind")
    if query.reason:
        wanted.add("reason")
    if query.truncated and config == "trace":
        wanted.add("finish_reason")
    if query.score_min is not None or query.score_max is not None:
        wanted.add("score_chosen" if config == "dpo" else "score")
    if query.margin_min is not None:
        wanted |= {"score_chosen", "score_rejected"}
    if query.q:
        wanted |= set(TEXT_COLUMNS[config])
    missing = sorted(c for c in wanted if not table.has(c))
    if "verification" in missing:
        raise InputError(f"{table.version_dir} has no verification verdicts to filter by (no `verification` column)")
    return [c for c in table.columns if c in wanted and c not in missing]


def _mask(config: str, t: Any, query: Query, truncated: frozenset[str], decided: dict[str, str]) -> Any:
    """The rows of one row group that match, as a boolean array (None: all of them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tests = []
    if query.method:
        tests.append(pc.equal(t["method"], query.method))
    if query.category:
        tests.append(pc.equal(t["category"], query.category))
    if query.model:
        tests.append(_model_mask(config, t, query.model))
    if query.verdict:
        tests.append(_verdict_mask(config, t["verification"], query.verdict))
    for name in ("stage", "kind", "reason"):
        if getattr(query, name) and name in t.column_names:
            tests.append(pc.equal(t[name], getattr(query, name)))
    if query.truncated:
        cut = (
            pc.equal(t["finish_reason"], "length")
            if config == "trace"
            else pc.is_in(t["prompt_id"], value_set=pa.array(sorted(truncated), pa.string()))
        )
        tests.append(cut if query.truncated == "yes" else pc.invert(pc.fill_null(cut, False)))
    score = t["score_chosen"] if config == "dpo" and "score_chosen" in t.column_names else None
    score = t["score"] if score is None and "score" in t.column_names else score
    if query.score_min is not None:
        tests.append(pc.greater_equal(score, query.score_min))
    if query.score_max is not None:
        tests.append(pc.less_equal(score, query.score_max))
    if query.margin_min is not None:
        tests.append(pc.greater_equal(pc.subtract(t["score_chosen"], t["score_rejected"]), query.margin_min))
    if query.decision:
        tests.append(_decision_mask(t["prompt_id"], query.decision, decided))
    if query.q:
        tests.append(_text_mask(config, t, query.q))
    if not tests:
        return None
    mask = pc.fill_null(tests[0], False)
    for test in tests[1:]:
        mask = pc.and_(mask, pc.fill_null(test, False))
    return mask


def _model_mask(config: str, t: Any, model: str) -> Any:
    import pyarrow.compute as pc

    if config == "sft":
        return _any_in_list(t["models"], lambda values: pc.equal(values, model), t.num_rows)
    if config == "dpo":
        return pc.or_(pc.fill_null(pc.equal(t["chosen_model"], model), False),
                      pc.fill_null(pc.equal(t["rejected_model"], model), False))  # fmt: skip
    return pc.equal(t["model"], model)


def _any_in_list(column: Any, test, rows: int) -> Any:
    """Per row of a list column: whether any element passes `test` (a kernel on the flat values)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    hits = pc.fill_null(test(pc.list_flatten(column)), False)
    parents = pc.list_parent_indices(column)
    out = np.zeros(rows, dtype=bool)
    chosen = pc.filter(parents, hits).to_numpy(zero_copy_only=False)
    out[chosen] = True
    return pa.array(out)


def _verdict_mask(config: str, verification: Any, verdict: str) -> Any:
    import pyarrow.compute as pc

    side, _, status = verdict.rpartition(":")
    if status not in VERDICTS or (config == "dpo" and side not in ("chosen", "rejected")):
        allowed = VERDICTS if config == "sft" else [f"{s}:{v}" for s in ("chosen", "rejected") for v in VERDICTS]
        raise InputError(f"filter verdict={verdict!r}: use one of {', '.join(allowed)}")
    column = pc.struct_field(verification, side) if config == "dpo" else verification
    statuses = pc.struct_field(column, "status")
    if status == "unchecked":
        return pc.is_null(statuses)
    return pc.equal(statuses, status)


def _text_mask(config: str, t: Any, text: str) -> Any:
    import pyarrow.compute as pc

    found = None
    for name in TEXT_COLUMNS[config]:
        if name not in t.column_names:
            continue
        column = t[name]
        if str(column.type).startswith("list"):  # messages: any message's content
            contents = lambda values: pc.match_substring(pc.struct_field(values, "content"), text, ignore_case=True)  # noqa: E731
            hit = _any_in_list(column, contents, t.num_rows)
        else:
            hit = pc.fill_null(pc.match_substring(column, text, ignore_case=True), False)
        found = hit if found is None else pc.or_(found, hit)
    return found


def _decision_mask(ids: Any, decision: str, decided: dict[str, str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if decision == "undecided":
        return pc.invert(pc.is_in(ids, value_set=pa.array(sorted(decided), pa.string())))
    chosen = sorted(pid for pid, d in decided.items() if d == decision)
    return pc.is_in(ids, value_set=pa.array(chosen, pa.string()))


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


def find_row(table: ConfigTable, prompt_id: str) -> tuple[int, dict[str, Any]] | None:
    """(row number, row) of the config's row for `prompt_id` (its first), or None."""
    import pyarrow.compute as pc

    for start, _, t in table.groups(["prompt_id"]):
        index = pc.index(t["prompt_id"], prompt_id).as_py()
        if index >= 0:
            return start + index, rows_at(table, [start + index])[0]
    return None


def rows_of(table: ConfigTable, prompt_id: str) -> list[dict[str, Any]]:
    """Every row of the config for `prompt_id` (a prompt's trace steps), in file order."""
    import pyarrow.compute as pc

    positions: list[int] = []
    for start, _, t in table.groups(["prompt_id"]):
        hits = pc.indices_nonzero(pc.equal(t["prompt_id"], prompt_id)).to_pylist()
        positions += [start + i for i in hits]
    return rows_at(table, positions) if positions else []


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
                  "trace": ("stage", "kind", "model"), "failures": ("stage", "reason")}  # fmt: skip
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
