"""Immutable, numbered versions of a data set, laid out like a Hugging Face dataset repository.

    <root>/<name>/LATEST                 "v2": the newest version
    <root>/<name>/v2/README.md           dataset card; its YAML `configs:` declare the files
    <root>/<name>/v2/moaa_manifest.json  provenance + sha256 of every file (see moaa.manifest)
    <root>/<name>/v2/data/<config>/<split>-00000-of-00001.parquet

so `datasets.load_dataset("<root>/<name>/v2", "sft")` and `trl sft --dataset_name <root>/<name>/v2
--dataset_config sft` read it unchanged. Configs and their columns:

- sft (train/test): prompt_id, messages [{role, content}], source, method, models [str], category
- dpo (train/test): prompt_id, prompt [{role, content}], chosen [{role: assistant, content}],
  rejected (same), score_chosen, score_rejected, chosen_model, rejected_model
- trace (train/test): every intermediate answer and judge verdict (see moaa.rows.TraceStep)
- failures (train only): prompt_id, stage, reason, error

Train/test is decided per prompt_id (sha256 of "<seed>:<prompt_id>" against test_size), so a
prompt sits in the same split in every config and test prompts are never trained on. A config
or split without rows is absent (`load_dataset` cannot read a zero-row parquet file).
A version is written into a temp folder and renamed into place; an existing one is never touched.

The manifest records `inputs_digest`: a sha256 of every JSONL part (per config, in order), the
split settings, the shard size and the parquet format. A version whose parent records the same
digest gets plain copies of the parent's verified `data/` files instead of re-encoding every row
(a re-run of a finished config); card and manifest are written fresh as always.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.errors import ConfigError, InputError, MoaaError
from moaa.manifest import (
    MANIFEST_NAME,
    build_manifest,
    copy_verified,
    read_manifest,
    scrub_secrets,
    sha256_file,
    verify_version,
    write_manifest,
)

log = logging.getLogger(__name__)

__all__ = ["VersionInfo", "write_version", "resolve_version", "list_versions", "verify_version"]

CONFIGS = ("sft", "dpo", "trace", "failures")
SPLIT_CONFIGS = ("sft", "dpo", "trace")  # failures keep a single `train` split
MAX_SHARD_ROWS = 50_000
_BATCH_ROWS = 1_000  # rows held in memory per split before a parquet row group is written
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"^v?([1-9][0-9]*)$")
SPLIT_RULE = "test when int(sha256(f'{seed}:{prompt_id}')[:8 bytes]) / 2**64 < test_size"
DATA_FORMAT = "moaa-parquet-1"  # change with any change to how rows become parquet files
Rows = dict[str, dict[str, int]]  # {config: {split: rows}}


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str  # "v3"
    path: Path


# Columns per config ("name" is a string; ":type" otherwise). Every row has prompt_id.
COLUMNS = {
    "sft": "prompt_id messages:messages source method models:strings category",
    "dpo": "prompt_id prompt:messages chosen:messages rejected:messages score_chosen:float score_rejected:float "
    "chosen_model rejected_model",
    "trace": "prompt_id stage kind text agent model role turn:int layer:int index:int selected:bool "
    "prompt_tokens:int completion_tokens:int latency_s:float finish_reason cached:bool score:float meta",
    "failures": "prompt_id stage reason error",
}


def schemas() -> dict[str, Any]:
    """The explicit parquet schema of each config (messages: list<struct<role, content>>)."""
    import pyarrow as pa

    types = {
        "str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
        "strings": pa.list_(pa.string()),
        "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
    }  # fmt: skip
    return {
        config: pa.schema([(col.partition(":")[0], types[col.partition(":")[2] or "str"]) for col in spec.split()])
        for config, spec in COLUMNS.items()
    }


def split_of(prompt_id: str, test_size: float, seed: int) -> str:
    """'test' for a stable fraction `test_size` of prompt ids (same answer in every config)."""

    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < test_size else "train"


def _normalize(row: dict[str, Any], schema: Any) -> dict[str, Any]:
    """The row reduced to the schema's columns; messages to {role, content}, meta to JSON text."""
    out = {}
    for field in schema:
        value = row.get(field.name)
        if field.name in ("messages", "prompt", "chosen", "rejected") and isinstance(value, list):
            value = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in value]
        elif field.name == "meta" and value is not None and not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        out[field.name] = value
    return out


def _text(content: Any) -> str | None:
    return content if content is None or isinstance(content, str) else json.dumps(content, ensure_ascii=False)


class _SplitWriter:
    """Streams one split's rows into `<split>-NNNNN-of-MMMMM.parquet` shards of ≤ max_rows rows."""

    def __init__(self, folder: Path, split: str, schema: Any, max_rows: int):
        self.folder, self.split, self.schema, self.max_rows = folder, split, schema, max_rows
        self.batch: list[dict[str, Any]] = []
        self.wheres: list[str] = []  # "file:line" of each batched row, to name a bad one
        self.parts: list[Path] = []
        self.writer: Any = None
        self.in_shard = 0
        self.rows = 0

    def add(self, row: dict[str, Any], where: str) -> None:
        self.batch.append(row)
        self.wheres.append(where)
        if len(self.batch) >= _BATCH_ROWS or self.in_shard + len(self.batch) >= self.max_rows:
            self._flush()

    def _table(self) -> Any:
        import pyarrow as pa

        try:
            return pa.Table.from_pylist(self.batch, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            for row, where in zip(self.batch, self.wheres, strict=True):
                try:
                    pa.Table.from_pylist([row], schema=self.schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    msg = f"{where}: a {self.folder.name} row has a value of the wrong type ({exc})"
                    raise InputError(msg + "; see the columns in moaa/versions.py") from exc
            raise

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if not self.batch:
            return
        table = self._table()
        if self.writer is None:
            self.parts.append(self.folder / f".{self.split}-part{len(self.parts):05d}.parquet")
            self.writer = pq.ParquetWriter(self.parts[-1], self.schema, compression="zstd")
        self.writer.write_table(table)
        self.in_shard += len(self.batch)
        self.rows += len(self.batch)
        self.batch, self.wheres = [], []
        if self.in_shard >= self.max_rows:
            self.writer.close()
            self.writer, self.in_shard = None, 0

    def close(self) -> int:
        """Write what is left and give the shards their Hub-style names; returns the row count."""
        self._flush()
        if self.writer is not None:
            self.writer.close()
        for index, part in enumerate(self.parts):
            # The content hash in the name keeps `load_dataset(DIR, CONFIG)` caches apart: datasets
            # keys its cache on the folder's base name (`v1`) and the listed file names, so two
            # versions named alike (another data set's v1, another output root) would share one.
            digest = hashlib.sha256(part.read_bytes()).hexdigest()[:12]
            part.rename(self.folder / f"{self.split}-{index:05d}-of-{len(self.parts):05d}-{digest}.parquet")
        return self.rows


def _read_rows(paths: list[Path]):
    """(row, 'file:line') of JSONL files; a bad line is an InputError naming it."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            log.warning("%s does not exist; skipped", path)
            continue
        with path.open("r", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{where}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict) or not row.get("prompt_id"):
                    raise InputError(f"{where}: every row needs a prompt_id")
                yield row, where


def write_config(
    folder: Path, config: str, paths: list[Path], test_size: float, seed: int, max_rows: int = MAX_SHARD_ROWS
) -> dict[str, int]:
    """Stream a config's JSONL parts into `folder/data/<config>/`; returns rows per (non-empty) split."""
    schema = schemas()[config]
    out = folder / "data" / config
    out.mkdir(parents=True, exist_ok=True)
    writers = {s: _SplitWriter(out, s, schema, max_rows) for s in ("train", "test")}
    for row, where in _read_rows(paths):
        split = split_of(row["prompt_id"], test_size, seed) if config in SPLIT_CONFIGS else "train"
        writers[split].add(_normalize(row, schema), where)
    counts = {split: writer.close() for split, writer in writers.items()}
    if not any(counts.values()):
        shutil.rmtree(out)
    return {split: n for split, n in counts.items() if n}


def _write_data(folder: Path, parts: dict[str, list[Path]], test_size: float, seed: int, max_rows: int) -> Rows:
    """Every config's rows from its JSONL parts into `folder/data/`; rows per (non-empty) config and split."""
    rows = {}
    for cfg in CONFIGS:
        counts = write_config(folder, cfg, list(parts.get(cfg) or []), test_size, seed, max_rows)
        if counts:
            rows[cfg] = counts
    return rows


def inputs_digest(parts: dict[str, list[Path]], *, test_size: float, split_seed: int, max_shard_rows: int) -> str:
    """sha256 of what a version's data files are made from: each config's part files (bytes, in
    order; a missing one as such), the split and shard settings, and the parquet format."""
    import importlib.metadata

    settings = {
        "format": DATA_FORMAT, "columns": COLUMNS, "split_rule": SPLIT_RULE, "batch_rows": _BATCH_ROWS,
        "pyarrow": importlib.metadata.version("pyarrow"), "test_size": float(test_size),
        "split_seed": split_seed, "max_shard_rows": max_shard_rows,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for cfg in CONFIGS:
        paths = [Path(p) for p in parts.get(cfg) or []]
        digest.update(f"\n{cfg}:{len(paths)}".encode())
        for path in paths:
            digest.update(f" {sha256_file(path) if path.is_file() else 'missing'}".encode())
    return digest.hexdigest()


def _copy_parent_data(root: Path, parent_ref: str | None, digest: str, folder: Path) -> Rows | None:
    """The parent's row counts once its verified `data/` files are copied into `folder`, when it
    was made from the same inputs (`digest`); None (nothing copied) otherwise."""
    if parent_ref is None:
        return None
    try:
        parent_dir = resolve_version(root, parent_ref)
        manifest = read_manifest(parent_dir)
        if manifest.get("inputs_digest") != digest:
            return None
        rows = {cfg: dict(splits) for cfg, splits in manifest["counts"]["rows"].items()}
        files = {rel: meta for rel, meta in manifest["files"].items() if rel.startswith("data/")}
        declared = {(f"data/{cfg}", split) for cfg, splits in rows.items() for split, n in splits.items() if n > 0}
        listed = {(Path(rel).parent.as_posix(), Path(rel).name.partition("-")[0]) for rel in files}  # data/sft, train
    except (MoaaError, KeyError, TypeError, AttributeError, ValueError):
        return None
    if not set(rows) <= set(CONFIGS) or not files or listed != declared or not copy_verified(parent_dir, folder, files):
        log.warning("%s was made from the same inputs but its data files fail; writing them anew", parent_ref)
        shutil.rmtree(folder / "data", ignore_errors=True)
        return None
    log.info("inputs unchanged since %s: its data files were copied, not re-encoded", parent_ref)
    return rows


def _versions(dataset_dir: Path) -> list[int]:
    if not dataset_dir.is_dir():
        return []
    found = (_VERSION.match(p.name) for p in dataset_dir.iterdir() if p.is_dir() and p.name.startswith("v"))
    return sorted(int(m.group(1)) for m in found if m)


def _latest(dataset_dir: Path) -> int | None:
    pointer = dataset_dir / "LATEST"
    if pointer.is_file():
        match = _VERSION.match(pointer.read_text().strip())
        if match and (dataset_dir / f"v{match.group(1)}").is_dir():
            return int(match.group(1))
    numbers = _versions(dataset_dir)
    return numbers[-1] if numbers else None


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(f"data set name {name!r} is invalid; use letters, digits, '.', '_' or '-' (e.g. 'moa-sft')")


def _resolve_parent(root: Path, name: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    if parent == "auto":
        latest = _latest(root / name)
        return f"{name}@v{latest}" if latest else None
    ref = parent if "@" in parent else f"{name}@{parent}"
    path = resolve_version(root, ref)
    return f"{path.parent.name}@{path.name}"


def write_version(
    root: Path,
    name: str,
    parts: dict[str, list[Path]],
    *,
    config: dict,
    run_info: dict,
    test_size: float,
    split_seed: int,
    license: str,
    tags: list[str],
    parent: str | None = "auto",
    version: int | str | None = None,
    max_shard_rows: int = MAX_SHARD_ROWS,
) -> VersionInfo:
    """Write the next version (or `version`) of data set `name` from JSONL parts; never overwrites."""
    from moaa.card import write_card

    root = Path(root)
    _check_name(name)
    config, run_info = scrub_secrets(config, where="config"), scrub_secrets(run_info, where="run_info")
    unknown = sorted(set(parts) - set(CONFIGS))
    if unknown:
        raise ConfigError(f"unknown data set config(s) {unknown}; known: {', '.join(CONFIGS)}")
    dataset_dir = root / name
    dataset_dir.mkdir(parents=True, exist_ok=True)
    number = _parse_version(version, name) if version is not None else (_latest(dataset_dir) or 0) + 1
    target = dataset_dir / f"v{number}"
    _refuse_existing(target)
    parent_ref = _resolve_parent(root, name, parent)
    digest = inputs_digest(parts, test_size=test_size, split_seed=split_seed, max_shard_rows=max_shard_rows)
    tmp = dataset_dir / f".tmp-v{number}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows = _copy_parent_data(root, parent_ref, digest, tmp)
        copied_from = parent_ref if rows is not None else None
        if rows is None:
            rows = _write_data(tmp, parts, test_size, split_seed, max_shard_rows)
        if not rows:
            raise InputError(f"no rows in any of {sorted(parts)}; nothing to write as {name}@v{number}")
        split = {"by": "prompt_id", "test_size": test_size, "seed": split_seed, "rule": SPLIT_RULE}
        info = VersionInfo(name, f"v{number}", target)
        stats = write_card(
            tmp, info, rows=rows, config=config, run_info=run_info, license=license, tags=tags, parent=parent_ref
        )
        meta = dict(name=name, version=info.version, parent=parent_ref, config=config, run_info=run_info)
        manifest = build_manifest(tmp, **meta, rows=rows, split=split)
        by_reason: dict[str, int] = {}
        for _stage, reason, n in stats.get("failures", []):
            by_reason[reason] = by_reason.get(reason, 0) + n
        manifest["counts"]["failures_by_reason"] = by_reason  # from the data, whatever run_info says
        manifest["inputs_digest"], manifest["data_copied_from"] = digest, copied_from
        write_manifest(tmp, manifest)
        _refuse_existing(target)
        try:
            os.rename(tmp, target)  # atomic; fails when another writer made target meanwhile
        except OSError as exc:
            raise MoaaError(f"{target} already exists; versions are immutable (write the next version)") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_latest(dataset_dir, number)
    log.info("wrote %s@%s to %s (%s)", name, info.version, target, rows)
    return info


def _parse_version(version: int | str, name: str) -> int:
    match = _VERSION.match(str(version))
    if not match:
        raise ConfigError(f"version {version!r} of {name} is invalid; use v1, v2, ...")
    return int(match.group(1))


def _refuse_existing(target: Path) -> None:
    if target.exists():
        raise MoaaError(
            f"{target} already exists; versions are immutable (let moaa pick the next version or use a new name)"
        )


def _point_latest(dataset_dir: Path, number: int) -> None:
    current = _latest(dataset_dir)
    if current is not None and current > number:
        return
    tmp = dataset_dir / f".LATEST.{uuid.uuid4().hex[:8]}"
    tmp.write_text(f"v{number}\n")
    os.replace(tmp, dataset_dir / "LATEST")


def resolve_version(root: Path, ref: str) -> Path:
    """The folder of 'name@vN' (or 'name' for the latest); InputError listing what exists."""
    root = Path(root)
    name, _, version = ref.partition("@")
    _check_name(name)
    dataset_dir = root / name
    have = _versions(dataset_dir)
    if not have:
        raise InputError(f"no data set named {name!r} under {root}; see `moaa datasets list --root {root}`")
    number = _parse_version(version, name) if version else _latest(dataset_dir)
    if number not in have:
        listed = ", ".join(f"v{n}" for n in have)
        raise InputError(f"{name}@v{number} does not exist under {root}; versions: {listed}")
    return dataset_dir / f"v{number}"


def list_versions(root: Path) -> list[dict[str, Any]]:
    """One dict per version under root: name, version, path, created_at, parent, rows, latest, summary."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for dataset_dir in sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)):
        latest = _latest(dataset_dir)
        for number in _versions(dataset_dir):
            path = dataset_dir / f"v{number}"
            try:
                manifest = read_manifest(path)
            except InputError:
                if not (path / MANIFEST_NAME).exists():
                    continue  # not a moaa version folder
                manifest = {}
            rows = (manifest.get("counts") or {}).get("rows", {})
            out.append({"name": dataset_dir.name, "version": f"v{number}", "path": path, "rows": rows,
                        "created_at": manifest.get("created_at"), "parent": manifest.get("parent"),
                        "latest": number == latest, "summary": manifest.get("summary")})  # fmt: skip
    return out
