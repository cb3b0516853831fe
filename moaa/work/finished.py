"""A finished run: the record of the version it wrote, and the check that a re-run has nothing to do.

`record_version` (called by moaa.work.finishing.finish_run once the version is in place) writes
`<work folder>/version.json`: the version, the digest of the config that made it and the shards it
was made of. `find_finished` is what `moaa run` asks before it imports Prefect or any model
client: a config is finished when its prompt file names the same work folder (the run's
fingerprint, from the file's bytes), every shard of every stage is DONE with no failure to ask
again, and the newest version of the data set is the recorded one, made from exactly these shard
files by this moaa, intact. Anything else (a changed config or prompt file, a transient failure,
an unfinished shard, a missing or newer version, a data set folder or Hub source, publishing, a
run holding the work folder) answers None: run the flow as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig, dump_public_config
from moaa.fileio import write_json_atomic
from moaa.work.run_plan import Shards, fingerprint, version_parts

log = logging.getLogger(__name__)

VERSION_RECORD = "version.json"


@dataclass(frozen=True)
class FinishedRun:
    """The version a re-run of a finished config would only copy."""

    path: Path
    rows: dict[str, dict[str, int]]  # config -> split -> rows, from its manifest

    def line(self) -> str:
        sft, dpo = (sum(self.rows.get(name, {}).values()) for name in ("sft", "dpo"))
        return f"up to date: {self.path} ({sft} SFT rows, {dpo} DPO pairs); nothing to do"


def config_digest(config: MoaaConfig) -> str:
    """sha256 of the resolved config as written (no secrets): any change is a new version."""
    return hashlib.sha256(json.dumps(dump_public_config(config), sort_keys=True).encode()).hexdigest()


def record_version(config: MoaaConfig, work_dir: Path, shards: Shards, version: Path) -> None:
    """Write `version.json`: the version this work folder's run wrote, from which config and shards."""
    record = {
        "version": version.name,
        "config_digest": config_digest(config),
        "shards": {stage: [out.name for _, out in pairs] for stage, pairs in shards.items()},
    }
    try:
        write_json_atomic(work_dir / VERSION_RECORD, record)
    except OSError as exc:  # the version is written; a re-run then takes the flow's path
        log.warning("could not write %s: %s", work_dir / VERSION_RECORD, exc)


def find_finished(config: MoaaConfig, base_dir: Path) -> FinishedRun | None:
    """The newest version, when running `config` again would only copy it; else None (run the flow)."""
    from moaa.errors import DamagedFile
    from moaa.locks import FolderBusy, FolderLock
    from moaa.sources import file_fingerprint

    if config.output.publish_repo_id:
        return None  # the flow publishes what it writes
    if config.prompts.schedule != "all":
        return None  # only reading the source tells whether it has new prompts: the flow's plan does
    prompts = file_fingerprint(config.prompts, base_dir)
    if prompts is None:
        return None
    work = Path(config.run.work_dir) / config.name / fingerprint(config, prompts)
    record = _read_record(work)
    if record is None or record.get("config_digest") != config_digest(config):
        return None
    try:
        with FolderLock(work, "work folder").hold(wait=False):  # a running run may be changing it
            return _finished(config, work, record)
    except FolderBusy:
        return None  # the flow refuses with the holder's name
    except DamagedFile:
        return None  # the flow redoes the damaged shard


def finished_plan(config: MoaaConfig, work: Path, instructions: Path | None = None) -> FinishedRun | None:
    """find_finished for a run already opened on `work` (its lock held): the newest version when the
    flow would only copy it (a scheduled run with nothing new, a finished config run again);
    `instructions`: the instruction stage's folder, whose prompts are part of the version."""
    from moaa.errors import DamagedFile

    record = _read_record(work)
    if record is None or record.get("config_digest") != config_digest(config) or config.output.publish_repo_id:
        return None
    try:
        return _finished(config, work, record, instructions)
    except DamagedFile:
        return None  # the flow redoes the damaged shard


def _read_record(work: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((work / VERSION_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _finished(
    config: MoaaConfig, work: Path, record: dict[str, Any], instructions: Path | None = None
) -> FinishedRun | None:
    shards = _done_shards(config, work, record.get("shards"))
    if shards is None:
        return None
    version = _recorded_latest(config, str(record.get("version")))
    if version is None or not _made_from(config, work, shards, version, instructions):
        return None
    from moaa.dataset.manifest import read_manifest

    return FinishedRun(version, read_manifest(version)["counts"]["rows"])


def _done_shards(config: MoaaConfig, work: Path, names: Any) -> Shards | None:
    """Every stage's shards, when all are DONE and none holds a failure that a run would ask again."""
    from moaa.rows import failure_is_transient
    from moaa.work.shards import read_done, read_jsonl

    stages = ["sft"] + (["preference"] if config.preference.enabled else [])
    if not isinstance(names, dict) or sorted(names) != sorted(stages):
        return None
    shards: Shards = {}
    for stage in stages:
        inputs = sorted((work / stage / "inputs").glob("*.jsonl"))
        if not inputs or [p.stem for p in inputs] != names[stage]:
            return None
        pairs = [(p, work / stage / p.stem) for p in inputs]
        done = [read_done(out) for _, out in pairs]
        if any(d is None for d in done) or not sum(d.counts.rows for d in done if d is not None):
            return None  # unfinished, or a stage that made nothing (the flow asks all its failures again)
        if any(failure_is_transient(f) for _, out in pairs for f in read_jsonl(out / "failures.jsonl")):
            return None  # the flow asks transient failures again
        shards[stage] = pairs
    return shards


def _recorded_latest(config: MoaaConfig, name: str) -> Path | None:
    """The data set's newest version folder, when it is the recorded one."""
    from moaa.dataset.versions import resolve_version
    from moaa.errors import MoaaError

    try:
        latest = resolve_version(Path(config.output.root), config.name)
    except MoaaError:
        return None
    return latest if latest.name == name else None


def _made_from(config: MoaaConfig, work: Path, shards: Shards, version: Path, instructions: Path | None) -> bool:
    """Whether `version` was written by this moaa from exactly these shard files, and is intact."""
    from moaa.dataset.files import MAX_SHARD_ROWS, inputs_digest
    from moaa.dataset.manifest import read_manifest, verify_version
    from moaa.errors import MoaaError
    from moaa.version import __version__

    try:
        manifest = read_manifest(version)
    except MoaaError:
        return False
    parts = version_parts(work, shards, instructions)
    digest = inputs_digest(
        parts, test_size=config.output.test_size, split_seed=config.output.split_seed, max_shard_rows=MAX_SHARD_ROWS
    )
    if manifest.get("moaa_version") != __version__ or manifest.get("inputs_digest") != digest:
        return False
    problems = verify_version(version)
    if problems:
        log.info("%s fails its manifest (%s): writing a new version", version, problems[0])
    return not problems
