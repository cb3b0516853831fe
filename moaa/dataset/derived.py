"""A version's data rewritten into the next version: some rows left out, some changed, the rest as they were.

    edits = {"sft": RowEdits(drop={"p3"}, change={"p7": lambda row: row | {"category": "math"}})}
    rows = rewrite_data(Path("data/demo/v3"), staging_folder, edits)   # {config: {split: rows}}

moaa.dataset.versions.write_derived makes such a folder a version (manifest, card, rename); a person's
review (moaa.view) is what asks for it. A config without edits is copied file by file and each copy
re-hashed against the parent's manifest. A config with edits is streamed a row group at a time in
the parent's own parquet schema (whatever columns it has, e.g. a `verification` column), so memory
stays flat for any size: a row group without an edited row is filtered in Arrow without becoming
Python objects. Shards keep the parent's split and the Hub-style `<split>-NNNNN-of-MMMMM-<hash>`
names (moaa.dataset.files); a split left without rows is absent, as in any version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.dataset.columns import shard_files
from moaa.dataset.files import CONFIGS, Rows
from moaa.dataset.manifest import copy_verified, read_manifest
from moaa.errors import InputError

REVIEW_REQUIRED = "required"


@dataclass
class RowEdits:
    """What becomes of one config's rows: prompt ids left out, and per prompt id a change of its row."""

    drop: set[str] = field(default_factory=set)
    change: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.drop or self.change)


def rewrite_data(parent: Path, folder: Path, edits: dict[str, RowEdits]) -> Rows:
    """Every config of `parent` into `folder/data/`, `edits` applied; rows per (non-empty) config and split."""
    unknown = sorted(set(edits) - set(CONFIGS))
    if unknown:
        raise InputError(f"no such data set config(s) {unknown}; known: {', '.join(CONFIGS)}")
    manifest = read_manifest(parent)
    files = manifest.get("files") or {}
    rows: Rows = {}
    for config in CONFIGS:
        shards = shard_files(parent, config)
        if not shards:
            continue
        if edits.get(config):
            counts = _rewrite_config(shards, folder / "data" / config, edits[config])
        else:
            listed = {rel: meta for rel, meta in files.items() if rel.startswith(f"data/{config}/")}
            if not copy_verified(parent, folder, listed):
                raise InputError(f"{parent}: the {config} files do not match its manifest; run `moaa datasets verify`")
            counts = dict((manifest.get("counts") or {}).get("rows", {}).get(config) or {})
        if any(counts.values()):
            rows[config] = {split: n for split, n in counts.items() if n}
    return rows


def _rewrite_config(shards: list[Path], out: Path, edits: RowEdits) -> dict[str, int]:
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[tuple[Path, int]]] = {}
    for index, shard in enumerate(shards):
        split = shard.name.partition("-")[0]
        staged = out / f".{split}-{index:05d}.parquet"
        n = 0
        with pq.ParquetFile(shard) as source:
            writer = pq.ParquetWriter(staged, source.schema_arrow, compression="zstd")
            try:
                for group in range(source.num_row_groups):
                    table = _edited(source.read_row_group(group), edits)
                    if table.num_rows:
                        writer.write_table(table)
                        n += table.num_rows
            finally:
                writer.close()
        if n:
            written.setdefault(split, []).append((staged, n))
        else:
            staged.unlink()
    counts = {}
    for split, parts in written.items():
        for number, (staged, _) in enumerate(parts):
            digest = hashlib.sha256(staged.read_bytes()).hexdigest()[:12]
            staged.rename(out / f"{split}-{number:05d}-of-{len(parts):05d}-{digest}.parquet")
        counts[split] = sum(n for _, n in parts)
    if not counts:
        out.rmdir()
    return counts


def _edited(table: Any, edits: RowEdits) -> Any:
    """One row group with its dropped rows left out and its changed rows changed (same schema)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = table.column("prompt_id")
    if edits.drop:
        table = table.filter(pc.invert(pc.fill_null(pc.is_in(ids, value_set=pa.array(sorted(edits.drop))), False)))
        ids = table.column("prompt_id")
    if not edits.change or not pc.any(pc.is_in(ids, value_set=pa.array(sorted(edits.change)))).as_py():
        return table  # no row of this group changes: it never becomes Python objects
    rows = table.to_pylist()
    changed = [edits.change[row["prompt_id"]](row) if row["prompt_id"] in edits.change else row for row in rows]
    return pa.Table.from_pylist(changed, schema=table.schema)


def review_pending(manifest: dict[str, Any]) -> str | None:
    """Why this version may not be published yet (its run set `output.review: required` and it is not
    the reviewed version), or None."""
    output = (manifest.get("config") or {}).get("output") or {}
    if output.get("review") != REVIEW_REQUIRED or (manifest.get("derived") or {}).get("kind") == "review":
        return None
    ref = f"{manifest.get('name')}@{manifest.get('version')}"
    return (
        f"{ref} awaits review (its run set output.review: required): look at it with `moaa view {ref}`, "
        f"decide its rows, then `moaa review apply {ref}` writes the reviewed version, which may be published"
    )
