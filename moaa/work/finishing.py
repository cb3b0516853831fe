"""Finishing a run: its data set version written (with card and report), the run summary, publishing
to the Hub (or holding it for review), and the summary of a run that found nothing to do.

    summary = finish_run(plan, collect(plan), elapsed, publish=False)   # moaa.work.totals.collect
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig, dump_config
from moaa.dataset.manifest import read_manifest
from moaa.dataset.versions import write_version
from moaa.errors import DamagedFile, MoaaError
from moaa.fileio import write_json_atomic
from moaa.work.finished import FinishedRun, record_version
from moaa.work.increments import prompts_added
from moaa.work.run_plan import RunPlan, version_parts
from moaa.work.shards import read_done, read_jsonl, redo_shard
from moaa.work.totals import RunTotals, summarize

log = logging.getLogger(__name__)


def finish_run(plan: RunPlan, totals: RunTotals, elapsed: float, publish: bool = False) -> dict[str, Any]:
    """Write the data set version and return the run summary (also saved in the work folder)."""
    config = plan.config
    summary = summarize(plan, totals, elapsed)
    run_info = {
        "stats": summary["endpoints"],
        "counts": {"prompts": plan.prompt_counts, "stages": totals.stages, "failures": summary["failures"]},
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
            version_parts(plan.work_dir, plan.shards, plan.instructions_dir),
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


def up_to_date_summary(finished: FinishedRun) -> dict[str, Any]:
    """The summary of a run that found nothing to do: the newest
    version's own run summary (what making its data cost), this run's part zero, `up_to_date` set."""
    made = (read_manifest(finished.path).get("run") or {}).get("summary") or {}
    return made | {
        "up_to_date": True, "line": finished.line(), "version": finished.path.name,
        "version_path": str(finished.path), "this_run": {"calls": 0, "cache_hits": 0, "cost": 0.0},
    }  # fmt: skip


def _redo_damaged(exc: DamagedFile) -> DamagedFile:
    """A finished shard's file that no longer reads: that shard is made unfinished, so the next run
    redoes it (repairing the file as it starts); the error says so."""
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
