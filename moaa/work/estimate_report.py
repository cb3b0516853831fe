"""The dry-run estimate in words: the notes on what it assumes, the preference pool described, and the
plain text `moaa run CONFIG --dry-run` prints (format_estimate) from moaa.work.estimate's result.
"""

from __future__ import annotations

from typing import Any

from moaa.config import MoaaConfig, PreferenceConfig
from moaa.work.call_shapes import CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS, MESSAGE_TOKENS, OUTPUT_FRACTION


def describe_pool(pref: PreferenceConfig) -> str:
    """The pool and its pairing rule in words: each agent's label, samples and model call."""
    source = pref.include_sft_answer if isinstance(pref.include_sft_answer, str) else "this run"
    members = [
        f"{m.label} x{m.samples} ({m.path})" if m.agent is not None else f"{m.label} ({source}'s SFT answer, no call)"
        for m in pref.pool()
    ]
    return f"{', '.join(members)}; {pref.pairing.describe()}"


def verification_notes(config: MoaaConfig, checked: int, kept: int) -> list[str]:
    """What checking answers adds: a re-ask per failing final answer, a verifier's tie-breaker on ties only."""
    notes = []
    if checked and config.sft.verify.mode == "require" and config.sft.verify.reask:
        notes.append(
            f"{checked} of {kept} prompts carry a reference: each final answer that fails its check is asked once "
            "more (sft.verify.reask), at most one call per such prompt, not counted above"
        )
    if config.preference.enabled and config.preference.scorer.kind == "verifier":
        notes.append("the verifier scorer's judges are asked only where verdicts tie: counted above as if always")
    return notes


def assumptions(config: MoaaConfig) -> list[str]:
    """What every estimate assumes (token sizes, first-try calls, n>1, early stops, unpriced endpoints)."""
    notes = [
        f"input tokens: the text each call sends (conversation, role, template, references) at "
        f"{CHARS_PER_TOKEN} characters per token, plus {MESSAGE_TOKENS} per message",
        f"output tokens: {OUTPUT_FRACTION:.0%} of each agent's max_tokens ({DEFAULT_MAX_TOKENS} when unset); "
        "references read by aggregators and judges are assumed the same length",
        "calls assume every call succeeds on its first try (retries and re-asked verdicts add calls) "
        "and no cached answer (a resumed or repeated run is cheaper)",
    ]
    from moaa.engine.methods import plan_of

    plan = plan_of(config.sft)
    unknown_n = sorted({a.endpoint for _, a in config.agents() if config.endpoints[a.endpoint].supports_n is None})
    if any(step.samples > 1 for step in plan.steps) or config.preference.enabled:
        if unknown_n:
            notes.append(
                f"n>1 sampling counted as one call on {', '.join(unknown_n)} (supports_n unset); "
                "a server that ignores n needs one call per sample"
            )
    if plan.stops_early:
        notes.append(f"{config.sft.method} calls are an upper bound: {plan.stops_early}")
    if config.preference.enabled:
        notes.append("preference calls assume all samples are distinct (duplicates are judged once)")
    unpriced = [
        n
        for n in config.used_endpoints()
        if config.endpoints[n].price_input_per_mtok is None and config.endpoints[n].price_output_per_mtok is None
    ]
    if unpriced:
        notes.append(
            f"no price set for {', '.join(unpriced)}: counted as $0 (set price_input_per_mtok/price_output_per_mtok)"
        )
    return notes


def format_estimate(est: dict[str, Any]) -> str:
    """The estimate as the plain text `moaa run --dry-run` prints."""
    p = est["prompts"]
    dropped = ", ".join(f"{k} {v}" for k, v in p["dropped"].items()) or "none"
    bound = " (upper bound)" if est["total"]["upper_bound"] else ""
    scorer = f", scorer {est['scorer']}" if est["scorer"] else ""
    lines = [
        f"moaa dry run '{est['name']}': method {est['method']}{scorer} - no model was called",
        f"prompts: {p['source']}: read {p['read']}, kept {p['kept']} (dropped: {dropped})",
    ]
    for name, stage in est["stages"].items():
        per = stage["calls"] / stage["prompts"] if stage["prompts"] else 0.0
        run = f", {stage['per_run_calls']} once per run" if stage["per_run_calls"] else ""
        turns = f", {stage['turns']} turns" if stage["turns"] != stage["prompts"] else ""
        upper = " (upper bound)" if stage["upper_bound"] else ""
        lines += [
            "",
            f"stage {name}: {stage['prompts']} prompts{turns}, {stage['calls']} calls "
            f"({per:.2f} per prompt{run}){upper}",
        ]
        lines += _table(("agent", "endpoint"), [(label, a["endpoint"], a, "") for label, a in stage["agents"].items()])
        if stage.get("reward_model_passes"):
            lines.append(f"  reward model: {stage['reward_model_passes']} local batches (no calls)")
        if stage.get("pool"):
            lines.append(f"  pool: {stage['pool']}")
        if stage.get("margin"):
            lines.append(f"  pairs: {stage['margin']}")
    lines += ["", "per endpoint:"]
    rows = [(name, e["model"], e, "" if e["priced"] else " (unpriced)") for name, e in est["endpoints"].items()]
    lines += _table(("endpoint", "model"), rows)
    t = est["total"]
    lines += [
        "",
        f"total: {t['calls']} calls{bound}, ~{t['input_tokens']:,} input + ~{t['output_tokens']:,} output "
        f"tokens, ~${t['cost']:.4f}"
        + (f" online, ~${t['batch_cost']:.4f} at batch price" if t.get("batch_cost") is not None else ""),
        "assumptions:",
    ]
    lines += [f"  - {note}" for note in est["assumptions"]]
    return "\n".join(lines)


def _table(heads: tuple[str, str], rows: list[tuple[str, str, dict[str, Any], str]]) -> list[str]:
    """Aligned rows: two text columns as wide as their longest cell, then calls, tokens, cost."""
    w1 = max([len(heads[0])] + [len(r[0]) for r in rows])
    w2 = max([len(heads[1])] + [len(r[1]) for r in rows])
    out = [f"  {heads[0]:<{w1}}  {heads[1]:<{w2}} {'calls':>8} {'in tokens':>12} {'out tokens':>12} {'cost':>10}"]
    for first, second, a, note in rows:
        cost = f"${a['cost']:.4f}"
        out.append(
            f"  {first:<{w1}}  {second:<{w2}} {a['calls']:>8} {a['input_tokens']:>12,} {a['output_tokens']:>12,} "
            f"{cost:>10}{note}"
        )
    return out
