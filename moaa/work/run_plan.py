"""A run's plan: its prompts filtered and split into input shards inside a work folder named by the
config's fingerprint (so the same command resumes the same run), and the files its version is made of.

A run, in the order the Prefect flow (flows/pipeline_flow.py) calls its steps:

1. `plan_run` (here): load and filter the prompts, write the input shards;
2. `moaa.work.stage_shard.run_shard`, once per shard, per stage;
3. `moaa.work.totals.collect` adds the shards up, `moaa.work.finishing.finish_run` writes the data set
   version (moaa.dataset.versions) from `version_parts` and returns the run summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig, PromptSourceConfig, dump_config, dump_public_config
from moaa.errors import DamagedFile, MoaaError, storage_error
from moaa.fileio import write_json_atomic, write_jsonl_atomic
from moaa.rows import Prompt
from moaa.work.shards import split_into_shards

log = logging.getLogger(__name__)

Shards = dict[str, list[tuple[Path, Path]]]  # stage -> [(input shard, output folder)]


@dataclass
class RunPlan:
    config: MoaaConfig
    work_dir: Path
    shards: Shards
    prompt_counts: dict[str, Any]
    prompt_source: dict[str, str]
    started: float = field(default_factory=time.time)
    # Failures of earlier runs of this work folder: {"transient"/"other": asked again, "permanent": kept}
    earlier_failures: dict[str, int] = field(default_factory=lambda: {"transient": 0, "other": 0, "permanent": 0})
    nothing_new: bool = False  # prompts.schedule next/resample found no prompt its shards lack (moaa.work.increments)
    instructions_dir: Path | None = None  # the instruction stage's folder, where it made the prompts

    def total(self, stage: str) -> int:
        return sum(1 for inp, _ in self.shards.get(stage, []) for _ in inp.open())


_POOL_DEFAULTS = {"candidates": None, "include_sft_answer": False, "pairing": {"one_side_from": None, "delta": None}}


def fingerprint(config: MoaaConfig, prompts: str = "") -> str:
    """Hash of what decides the data and its shards: the prompts' own fingerprint (their contents),
    the prompt settings, stages, each endpoint's model and sampling, and the shard size."""
    data = dump_config(config)
    endpoints = {name: {"model": ep["model"], "sampling": ep["sampling"]} for name, ep in data["endpoints"].items()}
    # `answers`: whether truncated answers are data (rows kept under `keep` must not survive a switch to drop).
    keep = {k: data[k] for k in ("name", "prompts", "sft", "preference", "answers")} | {"endpoints": endpoints}
    # A pool's settings at their defaults (a policy, best vs worst) hash as before pools existed: the
    # work folder of a run begun by an earlier moaa resumes.
    keep["preference"] = {k: v for k, v in keep["preference"].items() if v != _POOL_DEFAULTS.get(k, ...)}
    keep["prompt_data"] = prompts  # an edited prompt file is a new run (the cache keeps it cheap)
    if data.get("instructions") is not None:  # synthesized prompts: a scheduled run's folder is named by how
        keep["instructions"] = data["instructions"]
    # Shard folders are numbered: another shard size must not meet the DONE files of the old split.
    keep["shard_size"] = data["run"]["shard_size"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def plan_run(config: MoaaConfig, base_dir: Path | None = None, source: PromptSourceConfig | None = None) -> RunPlan:
    """Filter the prompts and write the input shards of a run's work folder; `source` replaces
    config.prompts as where they are read (the instruction stage's synthesized prompts).

    The prompts stream from the source into the shard files (moaa.sources.stream_prompts, spilling
    to a temporary file in run.work_dir until the source's fingerprint names the work folder), so
    memory does not grow with their number. Shards already on disk with the same prompts are kept.
    """
    _check_writable(Path(config.run.work_dir), "run.work_dir")
    _check_writable(Path(config.output.root), "output.root")  # fail now, not after the model calls
    try:
        return _plan(config, base_dir, source or config.prompts)
    except OSError as exc:  # the disk filled while spilling prompts or writing input shards
        raise storage_error(f"work folder {config.run.work_dir}", exc, "run.work_dir") from None


def _plan(config: MoaaConfig, base_dir: Path | None, source: PromptSourceConfig) -> RunPlan:
    from moaa.sources import stream_prompts

    if config.prompts.schedule != "all":
        return _plan_scheduled(config, base_dir, source)
    with stream_prompts(source, base_dir=base_dir, spill_dir=Path(config.run.work_dir)) as prompts:
        if not len(prompts):
            dropped = ", ".join(f"{k} {v}" for k, v in prompts.dropped.items() if v) or "none"
            raise MoaaError(
                f"prompts: no prompts left after filtering (dropped: {dropped}); relax the filters or fix the prompts"
            )
        work = Path(config.run.work_dir) / config.name / fingerprint(config, prompts.fingerprint)
        shards = {"sft": _stage_shards(work / "sft", prompts, config.run.shard_size)}
        if config.preference.enabled:
            pref = prompts.head(config.preference.limit)
            shards["preference"] = _stage_shards(work / "preference", pref, config.run.shard_size)
        counts = {"read": prompts.total_read, "kept": len(prompts), "dropped": dict(prompts.dropped)}
        source = {"label": prompts.source, "fingerprint": prompts.fingerprint}
        _keep_drops(prompts.drops, work / DROPS_FILE)
    write_json_atomic(work / "config.json", dump_public_config(config))
    return RunPlan(config, work, shards, counts, source)


def _plan_scheduled(config: MoaaConfig, base_dir: Path | None, source: PromptSourceConfig) -> RunPlan:
    """prompts.schedule next/resample: the work folder outlives a growing source; new shards for the
    prompts none of its shards holds (moaa.work.increments)."""
    from moaa.sources import stream_prompts
    from moaa.work.increments import append_shards, batches, pick_new, record_batch, shard_ids

    cfg = source
    every = cfg.model_copy(update={"limit": None})  # the limit counts new prompts, not the source's
    with stream_prompts(every, base_dir=base_dir, spill_dir=Path(config.run.work_dir)) as prompts:
        if not len(prompts):
            dropped = ", ".join(f"{k} {v}" for k, v in prompts.dropped.items() if v) or "none"
            raise MoaaError(
                f"prompts: no prompts left after filtering (dropped: {dropped}); relax the filters or fix the prompts"
            )
        work = Path(config.run.work_dir) / config.name / fingerprint(config, f"schedule:{prompts.source}")
        covered = set(shard_ids(sorted((work / "sft" / "inputs").glob("shard-*.jsonl"))))
        new = pick_new(prompts, covered, cfg.schedule, cfg.limit, seed=cfg.seed + len(batches(work)))
        held = len(list((work / "sft" / "inputs").glob("shard-*.jsonl")))
        shards = {"sft": append_shards(work / "sft", new, config.run.shard_size)}
        if config.preference.enabled:
            pref = new if config.preference.limit is None else new[: config.preference.limit]
            shards["preference"] = append_shards(work / "preference", pref, config.run.shard_size)
        counts = {"read": prompts.total_read, "kept": len(prompts), "dropped": dict(prompts.dropped),
                  "new": len(new), "held_before": len(covered)}  # fmt: skip
        source = {"label": prompts.source, "fingerprint": prompts.fingerprint}
        _keep_drops(prompts.drops, work / DROPS_FILE)
    if new:
        record_batch(work, len(new), shards["sft"][held:])
    log.info("prompts.schedule %s: %d new prompts (%d held already)", cfg.schedule, len(new), len(covered))
    write_json_atomic(work / "config.json", dump_public_config(config))
    return RunPlan(config, work, shards, counts, source, nothing_new=not new)


DROPS_FILE = "prompts/failures.jsonl"  # the prompts the filters left out, named (moaa.sources.drops)


def _keep_drops(drops: Any, path: Path) -> None:
    """The source's named drops as the run's failure rows of stage `prompts` (none: no file)."""
    from moaa.work.shards import read_jsonl

    if drops is None or drops.path is None:
        path.unlink(missing_ok=True)
        return
    write_jsonl_atomic(path, read_jsonl(drops.path))


def reopen_earlier_failures(plan: RunPlan) -> dict[str, int]:
    """Take out the failed prompts of earlier runs that this run asks again (moaa.work.shards.reopen_failures):
    transient ones; every one of a stopped run's unfinished shards or of a stage that made no row.
    Counts {"transient", "other", "permanent"} (permanent: kept). Call it holding the work folder's
    lock: it takes finished shards' DONE away, which a running run's collect would then miss."""
    from moaa.work.shards import reopen_failures

    found = {"transient": 0, "other": 0, "permanent": 0}
    for shards in plan.shards.values():
        made_nothing = not any(_has_a_row(out) for _, out in shards)
        for _, out in shards:
            for key, n in reopen_failures(out, everything=made_nothing).items():
                found[key] += n
    if any(found.values()):
        log.info(earlier_failures_line(found))
    return found


def _has_a_row(out: Path) -> bool:
    """Whether a shard's rows.jsonl holds a row (a damaged first line counts: the shard repairs it)."""
    from moaa.work.shards import read_jsonl

    try:
        return next(read_jsonl(out / "rows.jsonl"), None) is not None
    except DamagedFile:
        return True


def earlier_failures_line(found: dict[str, int]) -> str:
    """'re-asking 12 prompts that failed transiently; keeping 3 permanent failures' (earlier runs')."""
    other = f" and {found['other']} of a stopped run or a stage that made nothing" if found.get("other") else ""
    return (
        f"re-asking {found['transient']} prompts that failed transiently{other}; "
        f"keeping {found['permanent']} permanent failures (400, content filter, bad prompt)"
    )


def _stage_shards(folder: Path, prompts: Iterable[Prompt], size: int) -> list[tuple[Path, Path]]:
    inputs = split_into_shards((p.to_dict() for p in prompts), folder / "inputs", size)
    return [(p, folder / p.stem) for p in inputs]


def _check_writable(folder: Path, setting: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise MoaaError(f"{folder}: not writable ({exc.strerror}); set {setting} to a writable folder") from None


def version_parts(work_dir: Path, shards: Shards, instructions_dir: Path | None = None) -> dict[str, list[Path]]:
    """The JSONL files that make each config of a run's data set version (`failures`: the prompts the
    filters left out, stage `prompts`, then every shard's failed prompts); `instructions_dir`: the
    instruction stage's folder, whose prompts are part of the version."""
    outs = [out for shards in shards.values() for _, out in shards]
    parts = {
        "sft": [out / "rows.jsonl" for _, out in shards.get("sft", [])],
        "dpo": [out / "rows.jsonl" for _, out in shards.get("preference", [])],
        "trace": [out / "trace.jsonl" for out in outs],
        "failures": [work_dir / DROPS_FILE, *(out / "failures.jsonl" for out in outs)],
    }
    if instructions_dir is not None:  # the synthesized prompts, and the tasks the stage dropped
        parts["prompts"] = [instructions_dir / "prompts.jsonl"]
        parts["failures"][1:1] = sorted(instructions_dir.glob("batch-*.failures.jsonl"), key=_batch_number)
    return {k: [p for p in v if p.exists()] for k, v in parts.items()}


def _batch_number(path: Path) -> int:
    return int(path.name.split(".")[0].removeprefix("batch-"))
