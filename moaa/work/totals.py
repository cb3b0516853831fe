"""A run's totals, added up from its finished shards' DONE files (and the instruction stage's batches,
and SMoA's role call), and the run summary made from them: what a person reads at the end of `moaa
run` (moaa.work.summary.format_summary) and what the manifest records.

    totals = collect(plan)                  # RunTotals: stats, this run's stats, per-stage counts
    summary = summarize(plan, totals, elapsed)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moaa.models.stats import RunStats
from moaa.work.run_plan import RunPlan
from moaa.work.shards import read_done
from moaa.work.smoa_roles import read_roles


@dataclass
class RunTotals:
    """A run's totals: every call's accounting, this run's calls (not resumed work's), and per stage
    {"prompts", "rows", "failed", "dropped": {reason: n}, "counters": {name: n}, "seconds",
    "this_run": {"prompts", "wall_seconds"}}."""

    stats: RunStats
    new_stats: RunStats
    stages: dict[str, dict[str, Any]]


def collect(plan: RunPlan) -> RunTotals:
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
    roles = read_roles(plan.work_dir)  # SMoA's once-per-run role generation call
    if roles is not None:
        stats.merge(roles["stats"])
        if roles["finished_at"] >= plan.started:
            new.merge(roles["stats"])
    return RunTotals(stats=stats, new_stats=new, stages=stages)


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


def summarize(plan: RunPlan, totals: RunTotals, elapsed: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary: what a person reads at the end, and what the manifest records."""
    stats = totals.stats
    t = stats.totals()
    fresh = totals.new_stats.totals()
    sft = totals.stages.get("sft", {})
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
            "stages": totals.stages,
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
