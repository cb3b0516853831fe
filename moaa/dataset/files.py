"""A data set version's data files: JSONL parts in, Hub-style parquet shards out.

    data/<config>/<split>-NNNNN-of-MMMMM-<content hash>.parquet

Each config has an explicit schema (`COLUMNS`); train/test is decided per prompt_id (`split_of`)
so a prompt sits in the same split in every config. `inputs_digest` names what the files are made
from; `copy_parent_data` reuses a parent version's verified files when that digest matches (a
re-run of a finished config), instead of re-encoding every row. moaa.dataset.versions numbers, writes and
resolves the versions around these files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from moaa.dataset.manifest import copy_verified, read_manifest
from moaa.errors import DamagedFile, InputError, MoaaError
from moaa.fileio import sha256_file
from moaa.public import machine_paths, public_text, scrub_text, secret_values, served_name
from moaa.rows import failure_is_transient

log = logging.getLogger(__name__)

CONFIGS = ("sft", "dpo", "trace", "failures", "prompts")
SPLIT_CONFIGS = ("sft", "dpo", "trace")  # failures and prompts keep a single `train` split
MAX_SHARD_ROWS = 50_000
_BATCH_ROWS = 1_000  # rows held in memory per split before a parquet row group is written
SPLIT_RULE = "test when int(sha256(f'{seed}:{prompt_id}')[:8 bytes]) / 2**64 < test_size"
DATA_FORMAT = "moaa-parquet-4"  # change with any change to how rows become parquet files
Rows = dict[str, dict[str, int]]  # {config: {split: rows}}


def scan_config(version_dir: Path, config: str) -> Any:
    """A lazy polars frame over one config's parquet shards (every split, in file-name order), or
    None when the version has no such config. Polars is imported here, not at module import."""
    import polars as pl

    from moaa.dataset.columns import shard_files

    files = shard_files(version_dir, config)
    return pl.scan_parquet(files) if files else None


# Columns per config ("name" is a string; ":type" otherwise). Every row has prompt_id.
COLUMNS = {
    "sft": "prompt_id messages:messages source method models:strings category verification:verdict reference",
    "dpo": "prompt_id prompt:messages chosen:messages rejected:messages score_chosen:float score_rejected:float "
    "chosen_model rejected_model chosen_agent rejected_agent verification:verdicts reference",
    "trace": "prompt_id stage kind text agent model role turn:int layer:int index:int selected:bool "
    "prompt_tokens:int completion_tokens:int latency_s:float finish_reason cached:bool score:float meta",
    "failures": "prompt_id stage reason error transient:bool",
    # The instruction stage's kept tasks (moaa.instructions.synthesis), where the run synthesized its prompts.
    "prompts": "prompt_id prompt instruction input category seeds:strings batch:int round:int writer writer_model "
    "answerers:strings answers:strings measure agreement:float exact_match:bool consensus_agent consensus_answer "
    "reference",
}


def schemas() -> dict[str, Any]:
    """The explicit parquet schema of each config (messages: list<struct<role, content>>; verdict:
    moaa.verify.Verdict.column(), null where nothing was checked)."""
    import pyarrow as pa

    verdict = pa.struct([("status", pa.string()), ("reason", pa.string()), ("score", pa.float64()),
                         ("checks", pa.list_(pa.string())), ("answer", pa.string())])  # fmt: skip
    types = {
        "str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
        "strings": pa.list_(pa.string()),
        "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
        "verdict": verdict, "verdicts": pa.struct([("chosen", verdict), ("rejected", verdict)]),
    }  # fmt: skip
    return {
        config: pa.schema([(col.partition(":")[0], types[col.partition(":")[2] or "str"]) for col in spec.split()])
        for config, spec in COLUMNS.items()
    }


def split_of(prompt_id: str, test_size: float, seed: int) -> str:
    """'test' for a stable fraction `test_size` of prompt ids (same answer in every config)."""

    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < test_size else "train"


_MODEL_COLUMNS = ("model", "chosen_model", "rejected_model")


def _normalize(row: dict[str, Any], schema: Any, prefixes: list[str]) -> dict[str, Any]:
    """The row reduced to the schema's columns; messages to {role, content}, meta to JSON text.

    Models are named as served (a local folder by its name) and an error text loses this machine's
    paths and private URLs (moaa.public): rows are written to be read elsewhere."""
    out = {}
    for field in schema:
        value = row.get(field.name)
        if field.name in _MODEL_COLUMNS and isinstance(value, str):
            value = served_name(value)
        elif field.name == "models" and isinstance(value, list):
            value = [served_name(m) if isinstance(m, str) else m for m in value]
        elif field.name == "transient":
            value = failure_is_transient(row)
        elif field.name == "error" and isinstance(value, str):
            value = public_text(value, prefixes)
        elif field.name in ("messages", "prompt", "chosen", "rejected") and isinstance(value, list):
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
        """The batch as a table of the schema: parsed from JSON lines by Arrow's reader.

        `pa.Table.from_pylist` (and any `pa.array` of Python lists) imports pandas, when installed,
        to ask whether each column is a pandas object: ~60 MiB of the run's peak memory for
        nothing. A batch the reader refuses (a value of another type than its column's, one JSON
        cannot hold) goes through from_pylist, which converts it as before or names the bad row."""
        import pyarrow as pa
        import pyarrow.json as pj

        try:
            data = "\n".join(json.dumps(row) for row in self.batch).encode()
            table = pj.read_json(
                pa.BufferReader(data),
                read_options=pj.ReadOptions(block_size=len(data) + 1),  # one block: a row never straddles two
                parse_options=pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error"),
            )
            if table.schema.equals(self.schema):
                return table
        except (pa.ArrowException, ValueError, TypeError):
            pass
        return self._from_pylist()

    def _from_pylist(self) -> Any:
        import pyarrow as pa

        lists = [field.name for field in self.schema if pa.types.is_list(field.type)]
        for row, where in zip(self.batch, self.wheres, strict=True):
            for name in lists:  # from_pylist takes text for a list as its characters: ["a", "b", "c"]
                if isinstance(row.get(name), (str, bytes)):
                    raise self._wrong_type(where, f"text in the list {name!r}")
        wrong = (pa.ArrowException, ValueError, TypeError, OverflowError)
        try:
            return pa.Table.from_pylist(self.batch, schema=self.schema)
        except wrong:
            for row, where in zip(self.batch, self.wheres, strict=True):
                try:
                    pa.Table.from_pylist([row], schema=self.schema)
                except wrong as exc:
                    raise self._wrong_type(where, str(exc)) from exc
            raise

    def _wrong_type(self, where: str, why: str) -> InputError:
        return InputError(
            f"{where}: a {self.folder.name} row has a value of the wrong type ({why}); "
            "see the columns in moaa/dataset/versions.py"
        )

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
    """(row, 'file:line') of JSONL files, scrubbed of secrets (moaa.public.scrub_text: parts written
    by older versions, or by hand, are caught here); a bad line is a DamagedFile naming it."""
    secrets = secret_values()
    for path in paths:
        path = Path(path)
        if not path.exists():
            log.warning("%s does not exist; skipped", path)
            continue
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    row = json.loads(scrub_text(raw.decode("utf-8"), secrets))
                except ValueError as exc:  # not JSON, or not UTF-8
                    raise DamagedFile(f"{where}: not valid JSON ({getattr(exc, 'msg', exc)})", path) from None
                if not isinstance(row, dict) or not row.get("prompt_id"):
                    raise DamagedFile(f"{where}: every row needs a prompt_id", path)
                yield row, where


def _unique(config: str, rows):
    """Each prompt once, however it got onto disk twice (two attempts appending one shard file).

    sft and dpo: the first row of a prompt_id; failures: the first per (prompt_id, stage); trace:
    the first contiguous block of a prompt's records per part (a prompt's trace is one append), so
    a second attempt's copy of its steps is left out while its own steps all stay.
    """
    seen: set[Any] = set()
    block: tuple[str, str] | None = None
    for row, where in rows:
        if config == "trace":
            part = where.rpartition(":")[0]
            stage_dir = (Path(part).parent.parent.name, row["prompt_id"])  # sft/ or preference/ shards
            if (part, row["prompt_id"]) != block:
                if stage_dir in seen:
                    block = None
                    continue
                block = (part, row["prompt_id"])
                seen.add(stage_dir)
            yield row, where
            continue
        key = (row["prompt_id"], row.get("stage")) if config == "failures" else row["prompt_id"]
        if key in seen:
            log.warning("%s: prompt %s is already in %s; this copy is left out", where, row["prompt_id"], config)
            continue
        seen.add(key)
        yield row, where


def write_config(
    folder: Path, config: str, paths: list[Path], test_size: float, seed: int, max_rows: int = MAX_SHARD_ROWS
) -> dict[str, int]:
    """Stream a config's JSONL parts into `folder/data/<config>/`; returns rows per (non-empty) split."""
    schema = schemas()[config]
    out = folder / "data" / config
    out.mkdir(parents=True, exist_ok=True)
    writers = {s: _SplitWriter(out, s, schema, max_rows) for s in ("train", "test")}
    prefixes = machine_paths()
    for row, where in _unique(config, _read_rows(paths)):
        split = split_of(row["prompt_id"], test_size, seed) if config in SPLIT_CONFIGS else "train"
        writers[split].add(_normalize(row, schema, prefixes), where)
    counts = {split: writer.close() for split, writer in writers.items()}
    if not any(counts.values()):
        shutil.rmtree(out)
    return {split: n for split, n in counts.items() if n}


def write_data(folder: Path, parts: dict[str, list[Path]], test_size: float, seed: int, max_rows: int) -> Rows:
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


def copy_parent_data(parent_dir: Path | None, parent_ref: str | None, digest: str, folder: Path) -> Rows | None:
    """The parent's row counts once its verified `data/` files are copied into `folder`, when it
    was made from the same inputs (`digest`); None (nothing copied) otherwise."""
    if parent_dir is None:
        return None
    try:
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
