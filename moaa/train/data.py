"""Which data set version a training or eval run reads, and its rows.

`--data NAME[@vN]` names a version under the data root (moaa.dataset.versions layout); a folder path is
taken as a version folder as it is; nothing means the latest version of the data set written most
recently. Training reads the `train` split only; eval reads the `test` split, whose prompts were
never trained on (the split is decided per prompt_id, the same in every config).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("data")
MANIFEST_NAME = "moaa_manifest.json"
COLUMNS = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"]}


@dataclass(frozen=True)
class DatasetVersion:
    """A data set version folder and what identifies it: name, version, manifest hash."""

    name: str
    version: str
    path: Path
    manifest_sha256: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dataset",
            "ref": self.ref,
            "path": str(self.path.resolve()),
            "manifest_sha256": self.manifest_sha256,
        }


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def newest_dataset(root: Path, config: str | None = None) -> str:
    """The name of the data set under `root` whose latest version was written last."""
    return _newest_version(root, config=config, latest_only=True).parent.name


def _newest_version(root: Path, name: str | None = None, config: str | None = None, latest_only: bool = False) -> Path:
    """The newest version folder under `root` (of data set `name`, if given) that has `config`/train
    rows: `make sft` / `make dpo` never pick a version that has nothing for them to train on."""
    from moaa.dataset.versions import list_versions

    found = [v for v in list_versions(root) if name is None or v["name"] == name]
    if latest_only and config is None:
        found = [v for v in found if v["latest"]]
    if config is not None:
        found = [v for v in found if any((Path(v["path"]) / "data" / config).glob("train-*.parquet"))]
    if not found:
        what = f"data set {name!r}" if name else "data set"
        rows = f" with {config}/train rows" if config else ""
        hint = "enable the preference stage (preference.enabled: true) and " if config == "dpo" else ""
        raise InputError(
            f"no {what} version under {root}/{rows}; {hint}run `make data` first (a run whose stage made "
            "nothing fails and writes no version) or pass --data NAME@vN"
        )
    newest = max(found, key=lambda v: (v.get("created_at") or "", Path(v["path"]).stat().st_mtime))
    return Path(newest["path"])


def find_dataset(ref: str | None = None, root: str | Path = DEFAULT_ROOT, config: str | None = None) -> DatasetVersion:
    """The version named by `ref` ('name', 'name@v2', or a version folder), or the newest one.

    With `config` ('sft', 'dpo') and no version in `ref`, the newest version that has rows of that
    config: an older run's empty or SFT-only version is never what training silently reads.
    """
    from moaa.dataset.versions import resolve_version

    root = Path(root)
    if ref and Path(ref).is_dir() and (Path(ref) / "data").is_dir():
        path = Path(ref)
    elif ref and "@" in ref:
        path = resolve_version(root, ref)
    elif config is not None:
        if ref:
            resolve_version(root, ref)  # an unknown name: the error that lists what exists
        path = _newest_version(root, name=ref, config=config)
    else:
        path = resolve_version(root, ref or newest_dataset(root))
    return DatasetVersion(path.parent.name, path.name, path, _sha256(path / MANIFEST_NAME))


def has_split(dataset: DatasetVersion, config: str, split: str) -> bool:
    return any((dataset.path / "data" / config).glob(f"{split}-*.parquet"))


def read_parquet_split(dataset: DatasetVersion, config: str, split: str) -> Any:
    """The split's parquet shards as an in-memory `datasets.Dataset`.

    Not `load_dataset(folder, config)`: its cache is keyed by the folder's base name and the
    relative file patterns, so `a/v1` and `b/v1` would share one cache entry and the second read
    would silently return the first data set's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    files = sorted((dataset.path / "data" / config).glob(f"{split}-*.parquet"))
    return Dataset(pa.concat_tables([pq.read_table(f) for f in files]))


def load_rows(dataset: DatasetVersion, config: str, split: str = "train", columns: list[str] | None = None) -> Any:
    """The `split` of config `config` as a `datasets.Dataset`, reduced to `columns` (what TRL reads)."""
    if not has_split(dataset, config, split):
        hint = (
            "enable the preference stage (preference.enabled: true)" if config == "dpo" else "check the run's failures"
        )
        raise InputError(f"{dataset.path}: data set {dataset.ref} has no {config}/{split} rows; {hint}")
    rows = read_parquet_split(dataset, config, split)
    keep = columns if columns is not None else COLUMNS.get(config)
    if keep:
        missing = [c for c in keep if c not in rows.column_names]
        if missing:
            raise InputError(f"{dataset.path}: {config}/{split} lacks column(s) {missing}; found {rows.column_names}")
        rows = rows.select_columns(keep)
    log.info("read %d %s/%s rows of %s", len(rows), config, split, dataset.ref)
    return rows


def held_out_prompts(dataset: DatasetVersion, limit: int | None = None) -> list[dict[str, Any]]:
    """Held-out prompts: {prompt_id, messages (the conversation without the final answer), reference}.

    Read from the sft config's test split (the dpo test split when sft has none)."""
    config = "sft" if has_split(dataset, "sft", "test") else "dpo"
    if not has_split(dataset, config, "test"):
        raise InputError(
            f"{dataset.path}: data set {dataset.ref} has no test split; write it with output.test_size > 0"
        )
    columns = ["prompt_id", "messages"] if config == "sft" else ["prompt_id", "prompt", "chosen"]
    rows = load_rows(dataset, config, "test", columns=columns)
    out = []
    for row in rows:
        if config == "sft":
            messages = list(row["messages"])
            end = len(messages)
            while end and messages[end - 1]["role"] == "assistant":
                end -= 1
            prompt, reference = messages[:end], (messages[end]["content"] if end < len(messages) else None)
        else:
            prompt, reference = list(row["prompt"]), row["chosen"][-1]["content"]
        if prompt:
            out.append({"prompt_id": row["prompt_id"], "messages": prompt, "reference": reference})
    out.sort(key=lambda r: r["prompt_id"])  # a stable order, so `limit` picks the same prompts every time
    return out[:limit] if limit else out
