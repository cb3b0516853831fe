"""A run from start to finish, as plain steps the Prefect flow calls in order:

1. `plan_run`: load and filter prompts, split them into input shards inside a work folder named by
   the config's fingerprint (so the same command resumes the same run);
2. the flow runs `moaa.work.stage_shard.run_shard` once per shard, per stage;
3. `finish_run`: write the data set version with its report (moaa.dataset.versions) and build the run summary.
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
from moaa.models.stats import RunStats
from moaa.rows import Prompt
from moaa.work.shards import read_done, split_into_shards

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    config: MoaaConfig
    work_dir: Path
    shards: dict[str, list[tuple[Path, Path]]]  # stage -> [(input shard, output folder)]
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
    from moaa.work import increments as S

    cfg = source
    every = cfg.model_copy(update={"limit": None})  # the limit counts new prompts, not the source's
    with stream_prompts(every, base_dir=base_dir, spill_dir=Path(config.run.work_dir)) as prompts:
        if not len(prompts):
            dropped = ", ".join(f"{k} {v}" for k, v in prompts.dropped.items() if v) or "none"
            raise MoaaError(
                f"prompts: no prompts left after filtering (dropped: {dropped}); relax the filters or fix the prompts"
            )
        work = Path(config.run.work_dir) / config.name / fingerprint(config, f"schedule:{prompts.source}")
        covered = set(S.shard_ids(sorted((work / "sft" / "inputs").glob("shard-*.jsonl"))))
        new = S.pick_new(prompts, covered, cfg.schedule, cfg.limit, seed=cfg.seed + len(S.batches(work)))
        held = len(list((work / "sft" / "inputs").glob("shard-*.jsonl")))
        shards = {"sft": S.append_shards(work / "sft", new, config.run.shard_size)}
        if config.preference.enabled:
            pref = new if config.preference.limit is None else new[: config.preference.limit]
            shards["preference"] = S.append_shards(work / "preference", pref, config.run.shard_size)
        counts = {"read": prompts.total_read, "kept": len(prompts), "dropped": dict(prompts.dropped),
                  "new": len(new), "held_before": len(covered)}  # fmt: skip
        source = {"label": prompts.source, "fingerprint": prompts.fingerprint}
        _keep_drops(prompts.drops, work / DROPS_FILE)
    if new:
        S.record_batch(work, len(new), shards["sft"][held:])
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


def collect(plan: RunPlan) -> dict[str, Any]:
    """Fold every finished shard's summary into run totals."""
    stats, new = RunStats(), RunStats()
    stages: dict[str, dict[str, Any]] = {}
    for stage, shards in plan.shards.items():
        agg = {"prompts": 0, "rows": 0, "failed": 0, "dropped": {}, "counters": {}, "seconds": 0.0}
        # This run's part of the stage: prompts answered now (not resumed) and its wall time, from
        # the first of its shards to start to the last to finish (shards run in parallel).
        fresh_prompts, spans = 0, []
        for _, out in shards:
            done = read_done(out)
            if done is None:
                continue
            counts = done.counts
            stats.merge(done.stats)
            if done.finished_at >= plan.started:
                new.merge(done.attempt_stats)
                fresh_prompts += counts.prompts - counts.resumed
                spans.append((done.finished_at - done.seconds, done.finished_at))
            for key, n in counts.counters.items():
                agg["counters"][key] = agg["counters"].get(key, 0) + n
            agg["prompts"] += counts.prompts
            agg["rows"] += counts.rows
            agg["failed"] += counts.failed
            for reason, n in counts.dropped.items():
                agg["dropped"][reason] = agg["dropped"].get(reason, 0) + n
            agg["seconds"] += done.seconds
        agg["this_run"] = {
            "prompts": fresh_prompts,
            "wall_seconds": round(max(e for _, e in spans) - min(b for b, _ in spans), 2) if spans else 0.0,
        }
        stages[stage] = agg
    for batch in _instruction_batches(plan):  # the instruction stage's calls, kept with its batches
        stats.merge(batch["stats"])
        if batch["finished_at"] >= plan.started:
            new.merge(batch["stats"])
    roles = _read_roles(plan.work_dir)  # SMoA's once-per-run role generation call
    if roles is not None:
        stats.merge(roles["stats"])
        if roles["finished_at"] >= plan.started:
            new.merge(roles["stats"])
    return {"stats": stats, "new_stats": new, "stages": stages}


def _instruction_batches(plan: RunPlan) -> list[dict[str, Any]]:
    if plan.instructions_dir is None:
        return []
    from moaa.instructions.batches import Batches

    return Batches.read(plan.instructions_dir).records


def instructions_summary(plan: RunPlan) -> dict[str, Any] | None:
    """The instruction stage's part of the summary: its batches' counts (asked, kept, drops by reason)."""
    batches = _instruction_batches(plan)
    if not batches:
        return None
    totals: dict[str, Any] = {"batches": len(batches), "written": 0, "answered": 0, "kept": 0, "dropped": {}}
    for batch in batches:
        counts = batch["counts"]
        for key in ("written", "answered", "kept"):
            totals[key] += counts[key]
        for reason, n in counts["dropped"].items():
            totals["dropped"][reason] = totals["dropped"].get(reason, 0) + n
    last = batches[-1]["counts"]
    totals["this_batch"] = {"batch": batches[-1]["batch"], "seed": batches[-1]["seed"]} | last
    return totals


def failure_reasons(plan: RunPlan) -> dict[str, int]:
    from moaa.work.shards import read_jsonl

    reasons: dict[str, int] = {}
    for shards in plan.shards.values():
        for _, out in shards:
            for row in read_jsonl(out / "failures.jsonl"):
                key = f"{row['stage']}:{row['reason']}"
                reasons[key] = reasons.get(key, 0) + 1
    for reason, n in (instructions_summary(plan) or {}).get("dropped", {}).items():
        reasons[f"instructions:{reason}"] = n
    return reasons


def parts_of(plan: RunPlan) -> dict[str, list[Path]]:
    """The JSONL files that make each config of the data set version (`failures`: the prompts the
    filters left out, stage `prompts`, then every shard's failed prompts)."""
    outs = [out for shards in plan.shards.values() for _, out in shards]
    parts = {
        "sft": [out / "rows.jsonl" for _, out in plan.shards.get("sft", [])],
        "dpo": [out / "rows.jsonl" for _, out in plan.shards.get("preference", [])],
        "trace": [out / "trace.jsonl" for out in outs],
        "failures": [plan.work_dir / DROPS_FILE, *(out / "failures.jsonl" for out in outs)],
    }
    if plan.instructions_dir is not None:  # the synthesized prompts, and the tasks the stage dropped
        parts["prompts"] = [plan.instructions_dir / "prompts.jsonl"]
        parts["failures"][1:1] = sorted(plan.instructions_dir.glob("batch-*.failures.jsonl"), key=_batch_number)
    return {k: [p for p in v if p.exists()] for k, v in parts.items()}


def _batch_number(path: Path) -> int:
    return int(path.name.split(".")[0].removeprefix("batch-"))


def summarize(plan: RunPlan, totals: dict[str, Any], elapsed: float, extra: dict[str, Any] | None = None) -> dict:
    """The run summary: what a person reads at the end, and what the manifest records."""
    stats: RunStats = totals["stats"]
    t = stats.totals()
    fresh = totals["new_stats"].totals()
    sft = totals["stages"].get("sft", {})
    answered = max(sft.get("rows", 0) + sft.get("failed", 0), 1)
    sft_tags = [v for k, v in stats.to_dict()["tags"].items() if k.startswith("sft.")]
    sft_calls = sum(v["calls"] for v in sft_tags)
    sft_tokens = sum(v["prompt_tokens"] + v["completion_tokens"] for v in sft_tags)
    return (
        {
            "name": plan.config.name,
            "method": plan.config.sft.method,
            "work_dir": str(plan.work_dir),
            "prompts": plan.prompt_counts,
            "stages": totals["stages"],
            "failures": failure_reasons(plan),
            "earlier_failures": plan.earlier_failures,
            "calls": t.calls,
            "cache_hits": t.cache_hits,
            "retries": t.retries,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "cost": round(t.cost, 6),
            "cost_to_make": round(t.cost + t.cached_cost, 6),  # cached answers at what they cost when first asked
            "this_run": {
                "calls": fresh.calls - fresh.cache_hits,
                "cache_hits": fresh.cache_hits,
                "cost": round(fresh.cost, 6),
            },
            "seconds": round(elapsed, 2),
            "tokens_per_s": round(t.completion_tokens / elapsed, 2) if elapsed else 0.0,
            "per_prompt": {
                "calls": round(sft_calls / answered, 2),
                "tokens": round(sft_tokens / answered, 1),
                # the SFT stage's wall time this run over the prompts it answered this run (a resumed
                # run's reused rows and the other stages do not dilute it); 0 when nothing was new
                "seconds": _per_prompt_seconds(sft.get("this_run", {})),
            },
            "endpoints": stats.summary(),
        }
        | ({"instructions": made} if (made := instructions_summary(plan)) else {})
        | (extra or {})
    )


def _per_prompt_seconds(this_run: dict[str, Any]) -> float:
    prompts = this_run.get("prompts", 0)
    return round(this_run.get("wall_seconds", 0.0) / prompts, 3) if prompts else 0.0


def run_roles(config: MoaaConfig, plan: RunPlan) -> list[str] | None:
    """SMoA role descriptions: from the config, else generated once per run and kept in the run."""
    smoa = config.sft.smoa
    if config.sft.method != "smoa":
        return None
    if smoa.roles:
        return list(smoa.roles)
    saved = _read_roles(plan.work_dir)
    if saved is not None:
        return saved["roles"]
    import asyncio

    from moaa.engine.smoa import generate_roles, run_task
    from moaa.models.session import build_clients

    agent = smoa.role_generator or config.sft.aggregator
    stats = RunStats()
    client = build_clients(config, stats, [agent.endpoint])[agent.endpoint]
    task = run_task(smoa.task, plan.shards["sft"][0][0])
    roles = asyncio.run(generate_roles(len(config.sft.proposers), client, agent, task=task))
    # Kept with the call's accounting, which `collect` folds into the run totals like a shard's.
    record = {"roles": roles, "stats": stats.to_dict(), "finished_at": time.time()}
    write_json_atomic(plan.work_dir / ROLES_FILE, record)
    return roles


ROLES_FILE = "roles.json"


def _read_roles(work_dir: Path) -> dict[str, Any] | None:
    """The run's saved SMoA roles: {"roles", "stats", "finished_at"} (a bare list from older runs)."""
    path = work_dir / ROLES_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        data = None
    if isinstance(data, list) and all(isinstance(r, str) for r in data):
        return {"roles": data, "stats": {}, "finished_at": 0.0}
    if isinstance(data, dict) and isinstance(data.get("roles"), list) and isinstance(data.get("stats", {}), dict):
        return {"roles": data["roles"], "stats": data.get("stats", {}), "finished_at": data.get("finished_at", 0.0)}
    log.warning("%s is damaged (not the run's SMoA roles): generating them again (the call is cached)", path)
    return None


def finish_run(plan: RunPlan, totals: dict[str, Any], elapsed: float, publish: bool = False) -> dict[str, Any]:
    """Write the data set version and return the run summary (also saved in the work folder)."""
    from moaa.dataset.versions import write_version
    from moaa.work.finished import record_version
    from moaa.work.increments import prompts_added

    config = plan.config
    summary = summarize(plan, totals, elapsed)
    run_info = {
        "stats": summary["endpoints"],
        "counts": {"prompts": plan.prompt_counts, "stages": totals["stages"], "failures": summary["failures"]},
        "timings": {"seconds": summary["seconds"], "started": plan.started},
        "prompt_source": plan.prompt_source,
        "methods": {
            "sft": config.sft.method,
            "scorer": config.preference.scorer.kind if config.preference.enabled else None,
        },
        "summary": {k: v for k, v in summary.items() if k not in ("endpoints",)},
        "prompts_added": prompts_added(config, plan.shards),
    }
    bias = _bias(plan)
    if bias:
        run_info["bias"] = summary["bias"] = bias
    # output.review: required holds the publishing for a person's review; `moaa review apply`
    # publishes the reviewed version, as this run would have published its own.
    held = config.output.review == "required" and bool(publish or config.output.publish_repo_id)
    if held:
        run_info["publish_held"] = {"repo_id": config.output.publish_repo_id}
    try:
        info = write_version(
            Path(config.output.root),
            config.name,
            parts_of(plan),
            config=dump_config(config),
            run_info=run_info,
            test_size=config.output.test_size,
            split_seed=config.output.split_seed,
            license=config.output.license,
            tags=config.output.tags,
            report=True,  # written with the version, before its rename: a version is never edited afterwards
        )
    except DamagedFile as exc:
        raise _redo_damaged(exc) from None
    summary["version"] = info.version
    summary["version_path"] = str(info.path)
    record_version(config, plan.work_dir, plan.shards, info.path)  # a re-run of it: "up to date" at once
    if info.report is not None:
        summary["report_path"] = str(info.report)
    if held:
        summary["publish_held"] = f"not published: {info.name}@{info.version} awaits review (output.review: required)"
    elif publish or config.output.publish_repo_id:
        summary["published"] = _publish(info.path, config)
    try:
        write_json_atomic(plan.work_dir / "summary.json", summary)
    except OSError as exc:  # the version is written; only this copy of its summary is missing
        log.warning("could not write %s: %s", plan.work_dir / "summary.json", exc)
    return summary


def up_to_date_summary(finished: Any) -> dict[str, Any]:
    """The summary of a run that found nothing to do (a moaa.work.finished.FinishedRun): the newest
    version's own run summary (what making its data cost), this run's part zero, `up_to_date` set."""
    from moaa.dataset.manifest import read_manifest

    made = (read_manifest(finished.path).get("run") or {}).get("summary") or {}
    return made | {
        "up_to_date": True, "line": finished.line(), "version": finished.path.name,
        "version_path": str(finished.path), "this_run": {"calls": 0, "cache_hits": 0, "cost": 0.0},
    }  # fmt: skip


def _redo_damaged(exc: DamagedFile) -> DamagedFile:
    """A finished shard's file that no longer reads: that shard is made unfinished, so the next run
    redoes it (repairing the file as it starts); the error says so."""
    from moaa.work.shards import redo_shard

    if not (exc.path.parent / "DONE").exists():
        return exc
    redo_shard(exc.path.parent)
    return DamagedFile(
        f"{exc}: moaa's work file is damaged; no data set version was written; run the same command again: "
        "its shard is redone (its other rows and cached answers are kept)",
        exc.path,
    )


def _bias(plan: RunPlan) -> dict[str, Any] | None:
    if "preference" not in plan.shards:
        return None
    from moaa.preference import bias_report
    from moaa.work.shards import read_jsonl

    rows, trace, drops = [], [], {}
    for _, out in plan.shards["preference"]:
        rows.extend(read_jsonl(out / "rows.jsonl"))
        trace.extend(t for t in read_jsonl(out / "trace.jsonl") if t["stage"] != "sft")
        done = read_done(out)
        for reason, n in (done.counts.dropped if done is not None else {}).items():
            drops[reason] = drops.get(reason, 0) + n
    return bias_report(rows, trace, drops)


def _publish(path: Path, config: MoaaConfig) -> dict[str, Any]:
    import os

    from moaa.dataset.hub import publish_version

    if not config.output.publish_repo_id:
        raise MoaaError("publishing needs output.publish_repo_id (e.g. --set output.publish_repo_id=org/name)")
    result = publish_version(
        path, config.output.publish_repo_id, config.output.private, os.environ.get("HF_TOKEN"), False
    )
    return result if isinstance(result, dict) else vars(result)
