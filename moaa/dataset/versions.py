"""Immutable, numbered versions of a data set, laid out like a Hugging Face dataset repository.

    <root>/<name>/LATEST                 "v2": the newest version
    <root>/<name>/v2/README.md           dataset card; its YAML `configs:` declare the files
    <root>/<name>/v2/moaa_manifest.json  provenance + sha256 of every file (see moaa.dataset.manifest)
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

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moaa.dataset.files import (  # noqa: F401 - COLUMNS, schemas and split_of: part of this module's API
    COLUMNS,
    CONFIGS,
    MAX_SHARD_ROWS,
    SPLIT_RULE,
    copy_parent_data,
    inputs_digest,
    schemas,
    split_of,
    write_data,
)
from moaa.dataset.manifest import (
    build_manifest,
    git_commit,
    hash_files,
    read_manifest,
    scrub_secrets,
    verify_version,
    write_manifest,
)
from moaa.dataset.version_refs import (  # noqa: F401 - resolve_version, list_versions: part of this module's API
    check_name,
    latest_number,
    list_versions,
    parse_version,
    resolve_version,
)
from moaa.errors import ConfigError, InputError, MoaaError, storage_error
from moaa.fileio import write_text_atomic
from moaa.killpoints import kill_point
from moaa.locks import FolderLock
from moaa.version import __version__

log = logging.getLogger(__name__)

__all__ = ["VersionInfo", "write_version", "write_derived", "resolve_version", "list_versions", "verify_version"]

_LATEST_TMP = re.compile(r"^LATEST\.[0-9-]+\.tmp$")  # moaa.fileio's temp file for LATEST


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str  # "v3"
    path: Path
    report: Path | None = None  # its report.md, when one was asked for and could be written


def _parent_dir(root: Path, parent_ref: str | None) -> Path | None:
    """The parent version's folder, or None (no parent, or it cannot be found)."""
    if parent_ref is None:
        return None
    try:
        return resolve_version(root, parent_ref)
    except MoaaError:
        return None


def _resolve_parent(root: Path, name: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    if parent == "auto":
        latest = latest_number(root / name)
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
    report: bool = False,
) -> VersionInfo:
    """Write the next version (or `version`) of data set `name` from JSONL parts; never overwrites.

    `report`: with the run report (moaa.dataset.run_report). Data, card, report and manifest are all
    written in a staging folder, which one rename then makes the version: nothing edits it afterwards."""
    root = Path(root)
    check_name(name)
    config, run_info = scrub_secrets(config, where="config"), scrub_secrets(run_info, where="run_info")
    license, tags = scrub_secrets(license, where="license"), scrub_secrets(list(tags), where="tags")  # the card's
    unknown = sorted(set(parts) - set(CONFIGS))
    if unknown:
        raise ConfigError(f"unknown data set config(s) {unknown}; known: {', '.join(CONFIGS)}")
    dataset_dir = root / name
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
        # One writer per data set at a time (two configs of one name, two runs): each gets its own
        # number instead of one failing on "v1 already exists"; the wait is one version's write.
        with FolderLock(root, f"data set {name}", name=f".{name}.lock").hold(wait=True):
            _clean_leftovers(dataset_dir)
            return _write_locked(
                root, dataset_dir, name, parts, config, run_info, test_size, split_seed, license, tags,
                parent, version, max_shard_rows, report,
            )  # fmt: skip
    except OSError as exc:  # disk full, read-only: nothing is published half-written (temp folder)
        raise storage_error(f"output folder {root}", exc, "output.root") from None


def _write_locked(
    root, dataset_dir, name, parts, config, run_info, test_size, split_seed, license, tags, parent, version,
    max_shard_rows, report,
) -> VersionInfo:  # fmt: skip
    number = parse_version(version, name) if version is not None else (latest_number(dataset_dir) or 0) + 1
    target = dataset_dir / f"v{number}"
    _refuse_existing(target)
    parent_ref = _resolve_parent(root, name, parent)
    digest = inputs_digest(parts, test_size=test_size, split_seed=split_seed, max_shard_rows=max_shard_rows)
    tmp = dataset_dir / f".tmp-v{number}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows = copy_parent_data(_parent_dir(root, parent_ref), parent_ref, digest, tmp)
        copied_from = parent_ref if rows is not None else None
        if rows is None:
            rows = write_data(tmp, parts, test_size, split_seed, max_shard_rows)
        if not rows:
            raise InputError(f"no rows in any of {sorted(parts)}; nothing to write as {name}@v{number}")
        kill_point("data-written")
        split = {"by": "prompt_id", "test_size": test_size, "seed": split_seed, "rule": SPLIT_RULE}
        meta = dict(name=name, version=f"v{number}", parent=parent_ref, config=config, run_info=run_info)
        manifest = build_manifest(tmp, **meta, rows=rows, split=split)
        language = (config.get("output") or {}).get("language")
        manifest["card"] = {"license": license, "tags": list(tags), "language": language or ["en"]}
        manifest["inputs_digest"], manifest["data_copied_from"] = digest, copied_from
        reported = _complete(tmp, target, manifest, report)
        info = VersionInfo(name, f"v{number}", target, target / reported.name if reported else None)
        kill_point("manifest-written")
        _refuse_existing(target)
        try:
            os.rename(tmp, target)  # atomic; fails when another writer made target meanwhile
        except OSError as exc:
            raise MoaaError(f"{target} already exists; versions are immutable (write the next version)") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # A kill here leaves LATEST one behind: harmless, the newest version folder is the latest
    # (see _latest) and the next write repoints LATEST.
    kill_point("renamed")
    _point_latest(dataset_dir, number)
    log.info("wrote %s@%s to %s (%s)", name, info.version, target, rows)
    return info


def _complete(tmp: Path, target: Path, manifest: dict[str, Any], report: bool) -> Path | None:
    """Card, report and manifest, written into the staging folder `tmp` (the data is there): the
    version is complete before its rename. Returns the staged report.md, if one was written."""
    from moaa.dataset.card import write_card

    # The card is rendered from the manifest (so publish can render it again for the Hub) and
    # then hashed with every other file.
    stats = write_card(tmp, manifest, where=target.as_posix())
    by_reason: dict[str, int] = {}
    for _stage, reason, n in stats.get("failures", []):
        by_reason[reason] = by_reason.get(reason, 0) + n
    manifest["counts"]["failures_by_reason"] = by_reason  # from the data, whatever run_info says
    reported = _stage_report(tmp, manifest, target) if report else None
    manifest["files"] = hash_files(tmp)
    write_manifest(tmp, manifest)
    return reported


def _stage_report(tmp: Path, manifest: dict[str, Any], target: Path) -> Path | None:
    """The run report in the staging folder, recorded as `report_plots`; None (and no report files)
    when it cannot be made: the data is written, a missing report must not lose the run."""
    from moaa.dataset.run_report import IMAGE_DIR, REPORT_NAME, stage_report

    try:
        manifest["report_plots"] = stage_report(tmp, manifest)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the run report of %s: %s", target, exc)
        manifest.pop("report_plots", None)
        (tmp / REPORT_NAME).unlink(missing_ok=True)
        shutil.rmtree(tmp / IMAGE_DIR, ignore_errors=True)
        return None
    return tmp / REPORT_NAME


def _clean_leftovers(dataset_dir: Path) -> None:
    """Remove what a killed writer left: `.tmp-vN-*` folders and LATEST's temp files (called under
    the data set's lock, so no live writer owns them)."""
    for path in dataset_dir.iterdir():
        if path.name.startswith(".tmp-v") and path.is_dir():
            log.info("removing %s, left by a write that was stopped", path)
            shutil.rmtree(path, ignore_errors=True)
        elif (path.name.startswith(".LATEST.") or _LATEST_TMP.match(path.name)) and path.is_file():
            path.unlink(missing_ok=True)


def _refuse_existing(target: Path) -> None:
    if target.exists():
        raise MoaaError(
            f"{target} already exists; versions are immutable (let moaa pick the next version or use a new name)"
        )


def _point_latest(dataset_dir: Path, number: int) -> None:
    current = latest_number(dataset_dir)
    if current is not None and current > number:
        return
    write_text_atomic(dataset_dir / "LATEST", f"v{number}\n")


def write_derived(
    root: Path, parent: Path, write_data: Callable[[Path], dict[str, dict[str, int]]], *, derived: dict[str, Any]
) -> VersionInfo:
    """The next version of `parent`'s data set, made from `parent` (never by editing it).

    `write_data(folder)` writes the new version's files into the staging folder (its `data/`, e.g.
    moaa.dataset.derived.rewrite_data, and any other file, hashed with the rest) and returns its rows
    per config and split. The manifest is the parent's (config, run statistics, prompt source: how
    the rows were made) with its own number, date, code version, rows and file hashes, the parent
    as `parent`, and `derived` saying how it was made from it (e.g. a review: its file and hash);
    the card is rendered afresh and counts what `derived` records (read after `write_data` ran,
    so `write_data` may fill it in)."""
    root, parent = Path(root), Path(parent)
    name = parent.parent.name
    check_name(name)
    source = read_manifest(parent)
    dataset_dir = root / name
    try:
        with FolderLock(root, f"data set {name}", name=f".{name}.lock").hold(wait=True):
            _clean_leftovers(dataset_dir)
            number = (latest_number(dataset_dir) or 0) + 1
            target = dataset_dir / f"v{number}"
            _refuse_existing(target)
            tmp = dataset_dir / f".tmp-v{number}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                rows = write_data(tmp)
                if not rows:
                    raise InputError(f"no rows would be left in {name}@v{number}; nothing to write")
                manifest = {k: v for k, v in source.items() if k not in ("report_plots", "files")} | {
                    "version": f"v{number}", "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "parent": f"{name}@{parent.name}", "moaa_version": __version__, "git": git_commit(),
                    "inputs_digest": None, "data_copied_from": None, "derived": derived,
                    "counts": dict(source.get("counts") or {}) | {"rows": rows},
                }  # fmt: skip
                _complete(tmp, target, manifest, report=False)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _point_latest(dataset_dir, number)
    except OSError as exc:
        raise storage_error(f"output folder {root}", exc, "output.root") from None
    log.info("wrote %s@v%d from %s@%s (%s)", name, number, name, parent.name, derived.get("kind"))
    return VersionInfo(name, f"v{number}", target)
