"""Run folders and their lineage: every artifact records what it was made from.

    runs/sft/<dataset>-<version>-<timestamp>/   weights or adapter, README.md, lineage.json, ...
    runs/dpo/<dataset>-<version>-<timestamp>/
    runs/eval/<...>/  (or `eval/` inside the evaluated model's folder)
    runs/loop/<name>-<timestamp>/lineage.json   one per self-improvement loop

`lineage.json` = {kind, id, created_at, path, parents: [{kind: dataset|model|eval|run, ref, path,
...}], ...}; it is written last, so a folder without it is an unfinished run and is never picked as
"the latest".
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moaa.errors import InputError
from moaa.fileio import write_text_atomic

LINEAGE = "lineage.json"
DEFAULT_RUNS = Path("runs")


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def new_run_dir(kind: str, label: str, runs_root: str | Path = DEFAULT_RUNS) -> Path:
    """A fresh `runs/<kind>/<label>-<timestamp>[-N]/` folder (never an existing one)."""
    base = Path(runs_root) / kind / f"{label}-{timestamp()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def write_lineage(folder: Path, kind: str, parents: list[dict[str, Any]], **extra: Any) -> Path:
    """Write `folder/lineage.json` atomically (the run's completion mark)."""
    folder = Path(folder)
    record = {
        "kind": kind,
        "id": f"{kind}/{folder.name}",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "path": str(folder.resolve()),
        "parents": parents,
    } | extra
    write_text_atomic(folder / LINEAGE, json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
    return folder / LINEAGE


def read_lineage(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / LINEAGE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def latest_run(kind: str, runs_root: str | Path = DEFAULT_RUNS, dataset: str | None = None) -> Path:
    """The most recently finished run folder of `kind` (one with a lineage.json); with `dataset` (a
    data set's name), the latest one trained on a version of that data set."""
    folder = Path(runs_root) / kind
    done = [p for p in folder.glob("*/") if (p / LINEAGE).is_file()] if folder.is_dir() else []
    if not done:
        raise InputError(f"no finished {kind} run under {folder}/; run `moaa train {kind}` first or pass --model")
    mine = [p for p in done if dataset is None or trained_on_name(p) == dataset]
    if not mine:
        others = sorted({f"{trained_on_name(p)}" for p in done})
        raise InputError(
            f"no finished {kind} run under {folder}/ was trained on data set {dataset!r} (they were trained on "
            f"{', '.join(others)}); run `moaa train {kind} --data {dataset}` first, or pass --model RUN to "
            "continue from a run trained on other data"
        )
    return max(mine, key=lambda p: ((read_lineage(p) or {}).get("created_at", ""), p.stat().st_mtime))


def trained_on_name(folder: str | Path) -> str | None:
    """The name of the data set a run folder was trained on (its lineage's dataset parent), if any."""
    for parent in (read_lineage(folder) or {}).get("parents", []):
        if parent.get("kind") == "dataset":
            return str(parent.get("ref", "")).partition("@")[0] or None
    return None


def run_parent(folder: str | Path) -> dict[str, Any]:
    """A lineage parent entry for another moaa run folder (model, eval...)."""
    record = read_lineage(folder) or {}
    return {
        "kind": record.get("kind", "run"),
        "ref": record.get("id", str(folder)),
        "path": str(Path(folder).resolve()),
    }
