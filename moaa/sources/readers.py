"""Reading raw prompt rows from files (.jsonl, .json, .csv, .parquet) and Hugging Face data sets.

Every reader returns a `RawRows`: the rows as dicts, each with a location (`file.jsonl:17`,
`file.parquet: row 3`) for error messages, plus a digest of the data for the manifest fingerprint.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.config import PromptSourceConfig
from moaa.errors import InputError

log = logging.getLogger(__name__)

FILE_TYPES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
# Files that mark a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
_SAVED_MARKERS = ("state.json", "dataset_dict.json")


@dataclass
class RawRows:
    label: str  # Prompt.source: the file or folder name, or the hub id
    origin: str  # the path or hub id, for messages about the whole source
    rows: list[tuple[str, dict[str, Any]]]  # (location, row)
    digest: str  # sha256 of the file bytes, or of the rows' canonical JSON


def read_rows(cfg: PromptSourceConfig, base_dir: Path | None = None) -> RawRows:
    """All rows of the configured source, in order."""
    if cfg.path:
        path = _resolve(cfg.path, base_dir)
        if path.is_dir():
            return _read_dataset_folder(path, cfg, path.name)
        if not path.is_file():
            where = (
                f" (relative paths are resolved against {base_dir})"
                if base_dir and not Path(cfg.path).is_absolute()
                else ""
            )
            raise InputError(f"{path}: prompt file not found{where}; fix prompts.path")
        return _read_file(path)
    assert cfg.hf_dataset is not None  # the config validator demands one of the two
    local = _resolve(cfg.hf_dataset, base_dir)
    if local.exists():
        return _read_dataset_folder(local, cfg, local.name)
    return _read_hub(cfg)


def _resolve(name: str, base_dir: Path | None) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


# ---------------------------------------------------------------- files


def _read_file(path: Path) -> RawRows:
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise InputError(
            f"{path}: unknown prompt file type '{suffix or '(none)'}'; "
            "use .jsonl, .json, .csv or .parquet, or a Hugging Face data set folder"
        )
    data = path.read_bytes()
    if suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        text = _decode(path, data)
        rows = {".json": _json_rows, ".csv": _csv_rows}.get(suffix, _jsonl_rows)(path, text)
    if not rows:
        raise InputError(f"{path}: the file holds no prompts; add at least one row")
    return RawRows(path.name, str(path), rows, hashlib.sha256(data).hexdigest())


def _decode(path: Path, data: bytes) -> str:
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # tolerate the BOM some editors write
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = data[:offset].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte offset {offset}); save the file as UTF-8") from None


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{where}: invalid JSON ({exc.msg}; column {exc.colno}); fix or remove the line"
            ) from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {_json_type(row)}; write one object per line")
        rows.append((where, row))
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}; column {exc.colno}); fix the file") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise InputError(f'{path}: expected a JSON list of objects (or {{"data": [...]}}), got {_json_type(data)}')
    rows = []
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {i}: expected a JSON object, got {_json_type(row)}")
        rows.append((f"{path}: row {i}", row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    start = 2  # line 1 is the header
    try:
        for row in reader:
            # A quoted cell may span lines: name the line the row starts on.
            rows.append((f"{path}:{start}", {k: v for k, v in row.items() if k is not None}))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc}); fix the quoting") from None
    return rows


def _parquet_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({_first_line(exc)})") from None
    return [(f"{path}: row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


# ---------------------------------------------------------------- Hugging Face data sets


def _read_dataset_folder(path: Path, cfg: PromptSourceConfig, label: str) -> RawRows:
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
    return _dataset_rows(dataset, label, cfg.split, str(path))


def _pick_split(loaded: Any, split: str, path: Path) -> Any:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"{path}: no split '{split}' (splits found: {', '.join(loaded)}); fix prompts.split")
        return loaded[split]
    return loaded


def _read_hub(cfg: PromptSourceConfig) -> RawRows:
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
    return _dataset_rows(dataset, name, cfg.split, name)


def _dataset_rows(dataset: Any, label: str, split: str, where: str) -> RawRows:
    rows = dataset.to_list()
    if not rows:
        raise InputError(f"{where}: split '{split}' holds no prompts; pick another split or data set")
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    located = [(f"{where}[{split}]: row {i}", row) for i, row in enumerate(rows, start=1)]
    return RawRows(label, where, located, digest.hexdigest())


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
