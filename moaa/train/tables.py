"""Markdown renderings of eval results (results.md, the CLI's summary, the loop's rounds table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"  # value != value: NaN


def _name(ref: str) -> str:
    path = Path(ref)
    return f"{path.parent.name}/{path.name}" if path.is_absolute() else ref


def format_results_table(r: dict[str, Any]) -> str:
    """One eval as a markdown table: counts, win rate with its interval, LC win rate, lengths."""
    lo, hi = r.get("ci") or (None, None)
    level = f"{100 * r.get('confidence', 0.95):.0f}%"
    lc = _pct(r.get("lc_win_rate"))
    if r.get("lc_ci"):
        lc += f" [{_pct(r['lc_ci'][0])}, {_pct(r['lc_ci'][1])}]"
    chars = r.get("mean_chars") or {}
    lines = [
        f"Pairwise eval on {r['prompts']} held-out prompts ({r['dataset']['ref']}, {r['split']} split), "
        f"judge {r['judge']['model'] or r['judge']['endpoint']}, both orders (a disagreement is a tie).",
        "",
        f"| model | baseline | win | tie | loss | unjudged | win rate [{level} {r['ci_method']}] | LC win rate "
        "| mean chars (model / baseline) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {_name(r['model'])} | {_name(r['baseline'])} | {r['win']} | {r['tie']} | {r['loss']} | {r['unjudged']} "
        f"| {_pct(r['win_rate'])} [{_pct(lo)}, {_pct(hi)}] | {lc} "
        f"| {chars.get('model', 0):.0f} / {chars.get('baseline', 0):.0f} |",
    ]
    letters = r.get("letters")
    if letters:  # a weighted eval: the letters' counts over the same prompts, side by side
        lines += ["", f"Verdicts read from the judge's log-probabilities (a preference within {r['tie_threshold']:g} "
                  f"of 0.5 is a tie); by the letters alone: {letters['win']} win, {letters['tie']} tie, "
                  f"{letters['loss']} loss, win rate {_pct(letters['win_rate'])}."]  # fmt: skip
    cut = cut_line(r)
    return "\n".join(lines + (["", cut] if cut else []))


def cut_line(r: dict[str, Any]) -> str:
    """What became of answers cut at max_tokens, in words ("" when none was cut)."""
    cut = r.get("cut") or {}
    if not (cut.get("model") or cut.get("baseline") or cut.get("reasked")):
        return ""
    reasked = f", after {cut['reasked']} re-asks with up to {cut.get('reask_max_tokens')}" if cut.get("reasked") else ""
    fate = (
        "judged as they are (answers.truncated: keep)"
        if cut.get("policy") == "keep"
        else f"{cut.get('excluded', 0)} prompts excluded from judging and from the LC fit"
    )
    return (
        f"Answers still cut at max_tokens ({cut.get('max_tokens')} tokens{reasked}): model {cut.get('model', 0)}, "
        f"baseline {cut.get('baseline', 0)}; {fate}."
    )


def format_rounds_table(rounds: list[dict[str, Any]]) -> str:
    """The self-improvement loop's rounds: data, models, win rate against the previous round."""
    lines = [
        "| round | data set | SFT | DPO | win rate vs previous | LC win rate | gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {r.get('dataset', '-')} | {_name(r.get('sft') or '-')} | {_name(r.get('dpo') or '-')} "
            f"| {_pct(r.get('win_rate'))} | {_pct(r.get('lc_win_rate'))} | {_pct(r.get('gain'))} |"
        )
    return "\n".join(lines)
