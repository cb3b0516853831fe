"""Reading raw prompt rows from files (.jsonl, .json, .csv, .parquet) and Hugging Face data sets, one at a time.

`open_rows` returns a `RowSource`: its `rows` iterator yields each row as a dict with a location
(`file.jsonl:17`, `file.parquet: row 3`) for error messages, and its digest (of the data, for the
manifest fingerprint) is complete once the rows are exhausted. Nothing holds all rows: JSONL and
CSV are read line by line, parquet a batch of rows at a time, a Hugging Face data set (arrow,
memory-mapped) a slice at a time. A .json file (one list of objects) is the exception: it is
parsed whole, so use JSONL or parquet for large sets.

A file's errors come in the order a whole-file read would give them: a line that is not UTF-8
first (wherever it is), then the first unparsable line; rows before either are yielded.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.config import PromptSourceConfig
from moaa.errors import InputError

log = logging.getLogger(__name__)

FILE_TYPES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
# Files that mark a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
_SAVED_MARKERS = ("state.json", "dataset_dict.json")
_BOM = b"\xef\xbb\xbf"
_BARE_CR = re.compile(r"(?<=\r)(?!\n)")  # a line end of old Mac files
_BATCH = 1024  # parquet / data set rows converted to Python at a time
_CSV_CELL_LIMIT = 1 << 30  # characters a CSV cell may hold (the csv module's default: 131,072)


@dataclass
class BadRow:
    """A line that could not be read, yielded in its place under `prompts.on_bad_row: skip` (the
    filters name it as a drop); under `error` it is raised as an InputError instead."""

    error: str


Row = tuple[str, "dict[str, Any] | BadRow"]  # (location, row)


@dataclass
class RowSource:
    label: str  # Prompt.source: the file or folder name, or the hub id
    origin: str  # the path or hub id, for messages about the whole source
    rows: Iterator[Row]  # read once, in order; raises InputError for unreadable data
    hasher: Any  # sha256 of the file bytes, or of the rows' canonical JSON, fed as the rows are read

    @property
    def digest(self) -> str:
        """The data's sha256; complete once `rows` is exhausted."""
        return self.hasher.hexdigest()


def open_rows(cfg: PromptSourceConfig, base_dir: Path | None = None) -> RowSource:
    """The configured source, ready to read; a missing file or unloadable data set fails here."""
    if cfg.path:
        path = resolve_path(cfg.path, base_dir)
        if path.is_dir():
            return _read_dataset_folder(path, cfg, path.name)
        if not path.is_file():
            where = (
                f" (relative paths are resolved against {base_dir})"
                if base_dir and not Path(cfg.path).is_absolute()
                else ""
            )
            raise InputError(f"{path}: prompt file not found{where}; fix prompts.path")
        return _read_file(path, skip=cfg.on_bad_row == "skip")
    assert cfg.hf_dataset is not None  # the config validator demands one of the two
    local = resolve_path(cfg.hf_dataset, base_dir)
    if local.exists():
        return _read_dataset_folder(local, cfg, local.name)
    return _read_hub(cfg)


def resolve_path(name: str, base_dir: Path | None) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


# ---------------------------------------------------------------- files


def _read_file(path: Path, skip: bool = False) -> RowSource:
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise InputError(
            f"{path}: unknown prompt file type '{suffix or '(none)'}'; "
            "use .jsonl, .json, .csv or .parquet, or a Hugging Face data set folder"
        )
    reader: Callable[[Path, Any], Iterator[Row]] = {
        ".parquet": _parquet_rows,
        ".json": _json_rows,
        ".csv": _csv_rows,
    }.get(suffix, functools.partial(_jsonl_rows, skip=skip))
    hasher = hashlib.sha256()
    return RowSource(path.name, str(path), _not_empty(path, reader(path, hasher)), hasher)


def _not_empty(path: Path, rows: Iterator[Row]) -> Iterator[Row]:
    count = 0
    for count, row in enumerate(rows, start=1):  # noqa: B007 - the count is read after the loop
        yield row
    if not count:
        raise InputError(f"{path}: the file holds no prompts; add at least one row")


def _text_lines(path: Path, hasher: Any, skip: bool = False) -> Iterator[str | BadRow]:
    """The file's lines as text, ending at \\n, \\r\\n or \\r (kept); hashes every byte read.

    Each line is decoded on its own (UTF-8 never has a newline byte inside a character); a leading
    BOM is dropped. Bytes that are not UTF-8 fail with their line and byte offset (`skip`: that line
    is a BadRow instead).
    """
    offset = 0
    with path.open("rb") as fh:
        for number, data in enumerate(fh, start=1):
            hasher.update(data)
            bom = 3 if offset == 0 and data.startswith(_BOM) else 0  # tolerate the BOM some editors write
            try:
                text = data[bom:].decode("utf-8")
            except UnicodeDecodeError as exc:
                error = f"not UTF-8 text (byte offset {offset + bom + exc.start}); save the file as UTF-8"
                offset += len(data)
                if not skip:
                    raise InputError(f"{path}:{number}: {error}") from None
                yield BadRow(error)
                continue
            offset += len(data)
            if "\r" in text:
                yield from (piece for piece in _BARE_CR.split(text) if piece)
            else:
                yield text


def _jsonl_rows(path: Path, hasher: Any, skip: bool = False) -> Iterator[Row]:
    """One JSON object a line; a line that is not one fails (`skip`: is a BadRow, and reading goes on)."""
    lines = _text_lines(path, hasher, skip)
    for number, line in enumerate(lines, start=1):
        if isinstance(line, BadRow):
            yield f"{path}:{number}", line
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            error = f"{where}: invalid JSON ({exc.msg}; column {exc.colno}); fix or remove the line"
        else:
            if isinstance(row, dict):
                error = _surrogate_error(line, row, where)
                if not error:
                    yield where, row
                    continue
            else:
                error = f"{where}: expected a JSON object, got {_json_type(row)}; write one object per line"
        if skip:
            yield where, BadRow(error.removeprefix(f"{where}: "))
            continue
        for _ in lines:  # a line that is not UTF-8, later in the file, is reported first
            pass
        raise InputError(error)


def _json_rows(path: Path, hasher: Any) -> Iterator[Row]:
    """One JSON list (or {"data": [...]}): parsed whole, unlike the other formats."""
    data = path.read_bytes()
    hasher.update(data)
    text = _decode(path, data)
    if not text.strip():
        return
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}; column {exc.colno}); fix the file") from None
    if isinstance(parsed, dict) and isinstance(parsed.get("data"), list):
        parsed = parsed["data"]
    if not isinstance(parsed, list):
        raise InputError(f'{path}: expected a JSON list of objects (or {{"data": [...]}}), got {_json_type(parsed)}')
    check = "\\u" in text  # a lone surrogate can only come from an escape
    del data, text
    for i, row in enumerate(parsed, start=1):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {i}: expected a JSON object, got {_json_type(row)}")
        error = _surrogate_error("\\u" if check else "", row, f"{path}: row {i}")
        if error:
            raise InputError(error)
        yield f"{path}: row {i}", row


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_error(line: str, row: dict[str, Any], where: str) -> str:
    """'' unless a string of `row` holds a lone UTF-16 surrogate (a JSON escape such as \\ud800 without
    its pair): no text, it cannot be sent or written. `line` is the JSON text (checked only when it
    holds an escape)."""
    if "\\u" not in line or not _has_surrogate(row):
        return ""
    return (
        f"{where}: a string holds a lone UTF-16 surrogate (a JSON escape like \\ud800 without its pair), "
        "which is not text; fix or remove the line"
    )


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _decode(path: Path, data: bytes) -> str:
    bom = 3 if data.startswith(_BOM) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = data[:offset].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte offset {offset}); save the file as UTF-8") from None


def _csv_rows(path: Path, hasher: Any) -> Iterator[Row]:
    # The csv module refuses a cell over 128 KiB ("field larger than field limit"), which read as a
    # quoting error: a long prompt is read, then dropped by prompts.max_chars, named like any other.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_CELL_LIMIT))
    lines = _text_lines(path, hasher)
    reader = csv.DictReader(lines)
    start = 2  # line 1 is the header
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            error = f"{path}:{reader.line_num}: malformed CSV ({exc}); fix the quoting"
            break
        if row is None:
            return
        # A quoted cell may span lines: name the line the row starts on.
        yield f"{path}:{start}", {k: v for k, v in row.items() if k is not None}
        start = reader.line_num + 1
    for _ in lines:  # a line that is not UTF-8, later in the file, is reported first
        pass
    raise InputError(error)


def _parquet_rows(path: Path, hasher: Any) -> Iterator[Row]:
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    batches = _parquet_step(path, lambda: pq.ParquetFile(path).iter_batches(batch_size=_BATCH))
    number = 0
    while (batch := _parquet_step(path, lambda: next(batches, None))) is not None:
        for row in batch.to_pylist():
            number += 1
            yield f"{path}: row {number}", row


def _parquet_step(path: Path, step: Callable[[], Any]) -> Any:
    import pyarrow

    try:
        return step()
    except (pyarrow.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({_first_line(exc)})") from None


# ---------------------------------------------------------------- Hugging Face data sets


def _read_dataset_folder(path: Path, cfg: PromptSourceConfig, label: str) -> RowSource:
    """A `save_to_disk` folder (load_from_disk) or a folder of data files (load_dataset)."""
    import datasets

    try:
        if any((path / marker).is_file() for marker in _SAVED_MARKERS):
            loaded = datasets.load_from_disk(str(path))
            dataset = _pick_split(loaded, cfg.split, path)
        else:
            dataset = datasets.load_dataset(str(path), cfg.hf_config, split=cfg.split)
    except InputError:
        raise
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise InputError(f"{path}: no split '{cfg.split}' ({_first_line(exc)}); fix prompts.split") from None
        raise InputError(f"{path}: cannot load the data set ({_first_line(exc)})") from None
    except Exception as exc:  # datasets raises many types for unreadable folders
        raise InputError(f"{path}: cannot load the data set ({type(exc).__name__}: {_first_line(exc)})") from None
    return _dataset_source(dataset, label, cfg.split, str(path))


def _pick_split(loaded: Any, split: str, path: Path) -> Any:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"{path}: no split '{split}' (splits found: {', '.join(loaded)}); fix prompts.split")
        return loaded[split]
    return loaded


def _read_hub(cfg: PromptSourceConfig) -> RowSource:
    import datasets

    name = cfg.hf_dataset or ""
    try:
        dataset = datasets.load_dataset(name, cfg.hf_config, split=cfg.split)
    except (ConnectionError, FileNotFoundError) as exc:
        raise InputError(
            f"hf_dataset '{name}': cannot be loaded without network access ({_first_line(exc)}); "
            "it must be a local path or already in the Hugging Face cache"
        ) from None
    except ValueError as exc:
        raise InputError(
            f"hf_dataset '{name}': {_first_line(exc)}; check prompts.hf_config and prompts.split"
        ) from None
    except Exception as exc:
        raise InputError(f"hf_dataset '{name}': cannot be loaded ({type(exc).__name__}: {_first_line(exc)})") from None
    return _dataset_source(dataset, name, cfg.split, name)


def _dataset_source(dataset: Any, label: str, split: str, where: str) -> RowSource:
    if len(dataset) == 0:
        raise InputError(f"{where}: split '{split}' holds no prompts; pick another split or data set")
    hasher = hashlib.sha256()
    return RowSource(label, where, _dataset_rows(dataset, f"{where}[{split}]", hasher), hasher)


def _dataset_rows(dataset: Any, where: str, hasher: Any) -> Iterator[Row]:
    """The rows a slice at a time (as `Dataset.to_list` gives them); the data stays memory-mapped."""
    size = len(dataset)
    for start in range(0, size, _BATCH):
        for number, row in enumerate(dataset.select(range(start, min(start + _BATCH, size))).to_list(), start + 1):
            hasher.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
            hasher.update(b"\n")
            yield f"{where}: row {number}", row


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
