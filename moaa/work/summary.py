"""The run summary as a person reads it at the end of `moaa run`: rows, failures and drops per stage,
calls, tokens and cost, per endpoint, quality (truncations, gate rejections, unparsed verdicts).

    from moaa.work.summary import format_summary
    print(format_summary(summary))   # summary: moaa.work.finishing.finish_run's dict
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.work.run_plan import earlier_failures_line


def format_summary(s: dict[str, Any]) -> str:
    if s.get("up_to_date"):  # a run that found nothing to do (moaa.work.finished): no version written
        return s["line"]
    lines = [f"moaa run '{s['name']}' finished in {s['seconds']:.1f}s (method {s['method']})"]
    if s.get("instructions"):
        lines.append(instructions_line(s["instructions"]))
    lines.append(prompts_line(s))
    for stage, agg in s["stages"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in agg["dropped"].items()) or "none"
        lines.append(f"  {stage:<10} rows {agg['rows']:>6}  failed {agg['failed']:>4}  dropped: {dropped}")
        if agg.get("counters"):
            lines.append("  " + " " * 10 + " " + ", ".join(f"{k} {v}" for k, v in sorted(agg["counters"].items())))
    lines.append(
        f"  this run: {s['this_run']['calls']} model calls, {s['this_run']['cache_hits']} cache hits, "
        f"${s['this_run']['cost']:.4f}; resumed work is reused"
    )
    lines.append(
        f"  data totals: calls {s['calls']} (cache hits {s['cache_hits']}, retries {s['retries']})  tokens "
        f"{s['prompt_tokens']} in / {s['completion_tokens']} out  {s['tokens_per_s']} tok/s  cost ${s['cost']:.4f}"
        f" (cost to make, cached answers included: ${s.get('cost_to_make', s['cost']):.4f})"
    )
    pp = s["per_prompt"]
    wall = f", {pp['seconds']}s of SFT wall time this run" if pp["seconds"] else ""
    lines.append(f"  per prompt ({s['method']}): {pp['calls']} calls, {pp['tokens']} tokens{wall}")
    for name, ep in s["endpoints"].items():
        lat = ep.get("latency") or {}
        p50 = f"p50 {lat['p50']:.2f}s p90 {lat['p90']:.2f}s" if lat else "no latency"
        lines.append(
            f"  endpoint {name}: {ep['calls']} calls, {ep['failures']} failed, {ep['prompt_tokens']}+"
            f"{ep['completion_tokens']} tokens, ${ep['cost']:.4f}, {p50}"
        )
    lines.append("  quality: " + quality_line(s["stages"]))
    from moaa.verify.report import verification_lines

    for stage, text in verification_lines(s["stages"], s["method"]):
        lines.append(f"  verification ({stage}): {text}")
    earlier = s.get("earlier_failures") or {}
    if any(earlier.values()):
        lines.append("  re-run: " + earlier_failures_line(earlier))
    if s["failures"]:
        lines.append("  failures: " + ", ".join(f"{k} {v}" for k, v in s["failures"].items()))
    if s.get("version_path"):
        lines.append(f"  data set: {s['version_path']}  (load_dataset('{s['version_path']}', 'sft'))")
    if s.get("publish_held"):
        ref = f"{Path(s['version_path']).parent.name}@{s['version']}"
        lines.append(f"  review: {s['publish_held']}; `moaa view {ref}`, then `moaa review apply {ref}` publishes it")
    return "\n".join(lines)


def instructions_line(made: dict[str, Any]) -> str:
    """'  instructions batch 1 (seed 1): kept 20 of 31 written (24 answered), mean agreement 0.61; dropped: ...'."""
    last = made["this_batch"]
    dropped = ", ".join(f"{k} {v}" for k, v in last["dropped"].items()) or "none"
    agreement = f", mean agreement {last['mean_agreement']:.2f}" if last.get("mean_agreement") is not None else ""
    if last.get("diversity"):
        agreement += f", distinct-2 {last['diversity']['distinct_2']:.2f}"
    earlier = (
        f"; {made['kept'] - last['kept']} kept by {made['batches'] - 1} earlier batches" if made["batches"] > 1 else ""
    )
    return (
        f"  {'instructions':<10} batch {last['batch']} (seed {last['seed']}): kept {last['kept']} of {last['written']} "
        f"written ({last['answered']} answered){agreement}; dropped: {dropped} (named in the failures config, stage "
        f"instructions){earlier}"
    )


def prompts_line(s: dict[str, Any]) -> str:
    """'  prompts   read 7, kept 4; dropped: too_long 1, empty 2 (named in the failures config, stage prompts)'."""
    counts = s.get("prompts") or {}
    dropped = {k: v for k, v in (counts.get("dropped") or {}).items() if v}
    named = sum(v for k, v in dropped.items() if k != "sampled_out")
    shown = ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"
    where = " (named in the failures config, stage prompts)" if named else ""
    return f"  {'prompts':<10} read {counts.get('read', 0)}, kept {counts.get('kept', 0)}; dropped: {shown}{where}"


def judge_ties(counters: dict[str, int]) -> list[str]:
    """The judge's ties read two ways, side by side: by what it wrote (digits, letters) and by its
    log-probabilities (weighted ratings, AlpacaEval 2's weighted preference)."""
    out = []
    if counters.get("judged_weighted"):
        out.append(
            f"judge ties (best within min_margin of worst): {counters.get('ties_hard', 0)} of "
            f"{counters['judged_weighted']} judged prompts by the digits written, {counters.get('ties_weighted', 0)} "
            "by weighted ratings"
        )
    if counters.get("pairs_weighted"):
        out.append(
            f"pairwise ties: {counters.get('pair_ties', 0)} of {counters.get('pairs_judged', 0)} comparisons by the "
            f"letters, {counters.get('pair_ties_weighted', 0)} of {counters['pairs_weighted']} by log-probabilities"
        )
    if counters.get("audited"):
        out.append(audit_line(counters))
    return out


def audit_line(counters: dict[str, int]) -> str:
    """preference.pair_audit's figures (moaa.preference.pair_audit): the written pairs compared head to
    head, ties and rejected-first read by the letters and by log-probabilities, and the wrong-first
    share among pairs whose rejected answer failed its check."""
    c = counters.get
    compared, weighted, unparsed = c("audit_comparisons", 0), c("audit_weighted", 0), c("audit_unparsed", 0)
    line = (
        f"pair audit (chosen vs rejected, both orders): {compared} comparisons of {c('audited', 0)} pairs"
        f"{f' ({unparsed} unparsed)' if unparsed else ''}; ties "
        f"{c('audit_ties_hard', 0)} by the letters, {c('audit_ties_weighted', 0)} of {weighted} by log-probabilities; "
        f"rejected ranked first {c('audit_rejected_first_hard', 0)} / {c('audit_rejected_first_weighted', 0)}"
    )
    return line + (
        f"; a wrong answer first (of {c('audit_checked', 0)} whose rejected side failed its check) "
        f"{c('audit_wrong_first_hard', 0)} by the letters, {c('audit_wrong_first_weighted', 0)} by log-probabilities"
    )


def quality_line(stages: dict[str, Any]) -> str:
    """Truncated answers (finish_reason length) per stage, aggregates the quality gates rejected
    (moaa.engine.quality) and unparsed verdicts, in one line."""
    from moaa.dataset.card_sections import truncation_counts
    from moaa.engine.quality import gate_summary

    parts = []
    for stage, agg in stages.items():
        counters = agg.get("counters", {})
        part = f"{stage} {counters.get('truncated', 0)} of {counters.get('steps', 0)} answers truncated"
        if counters.get("truncated", 0):  # what answers.truncated did with them
            part += " (" + truncation_counts(counters) + ")"
        parts.append(part)
        if stage == "sft":
            parts.append(gate_summary(counters))
            parts.append(f"{counters.get('degraded', 0)} rows from fewer answers than configured (sft.min_answers)")
        if "unparsed" in counters:
            parts.append(f"{counters['unparsed']} unparsed verdicts")
        parts += judge_ties(counters)
    return ", ".join(parts)
