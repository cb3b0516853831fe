"""A DPO pair as its judge saw it: chosen vs rejected word by word, every candidate with its score, each
verdict (a pairwise judge's in both orders, with the rationale of each), the margin and why the pair
was kept.

    view = build_pair(row, steps, manifest)   # the dpo row and its prompt's preference-stage trace steps

The candidates are the trace's `sample` steps (meta: pick chosen/rejected, count, samples; `dropped`
for one cut at max_tokens), the verdicts its `verdict` steps, one per candidate, whose meta is the
scorer's details (moaa.preference): a pairwise judge records each pair once, on the lower index, with
both orders' winners (`ab`: the lower index shown first, `ba`: second) and raw replies, whose JSON
`rationale` is shown; a pointwise or MoA judge records each judge's ratings and rationales. The
reasons a pair is kept are moaa.preference.pairs' rules with the run's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moaa.json_text import json_objects
from moaa.rows import trace_meta
from moaa.view.textdiff import Segment, word_diff

_OUTCOME = {"first": "the first won", "second": "the second won", "tie": "tie", None: "no verdict"}


@dataclass
class Candidate:
    index: int
    text: str
    score: float | None
    model: str
    pick: str  # chosen, rejected or ""
    count: int
    finish_reason: str
    dropped: str
    tokens: int
    rationale: str = ""  # the verdict's text (a pointwise rationale, or "won 2, tied 1, ...")
    judges: list[dict[str, Any]] = field(default_factory=list)  # pointwise / MoA judge records


@dataclass
class Comparison:
    """Two candidates judged in both orders (a pairwise judge)."""

    first: int  # shown first in order AB
    second: int
    judge: str
    ab: str | None  # winner when `first` was shown first: "A" (first), "B" (second), "tie"
    ba: str | None  # winner when `second` was shown first: "A" (second), "B" (first), "tie"
    ab_why: str
    ba_why: str
    outcome: str
    agree: bool | None
    error: str = ""
    is_pair: bool = False  # chosen vs rejected
    odds: tuple[float, float] | None = None  # P(`first` better) in each order, from a weighted judge's log-probs
    weighted: str = ""  # what those probabilities decide (the outcome a weighted judge counts)

    def winner(self, order: str) -> str:
        """What one order's verdict said: '#i won', 'a tie' or 'no verdict'."""
        won = self.ab if order == "ab" else self.ba
        shown = (self.first, self.second) if order == "ab" else (self.second, self.first)
        return {"A": f"#{shown[0]} won", "B": f"#{shown[1]} won", "tie": "a tie"}.get(won or "", "no verdict")


@dataclass
class Pair:
    row: dict[str, Any]
    chosen: list[Segment]
    rejected: list[Segment]
    margin: float | None
    why: list[str]
    candidates: list[Candidate]
    comparisons: list[Comparison]
    scorer: str
    others: list[dict[str, Any]] = field(default_factory=list)  # steps of other kinds (e.g. verification)


def build_pair(row: dict[str, Any], steps: list[dict[str, Any]], manifest: dict[str, Any]) -> Pair:
    chosen, rejected = _text(row.get("chosen")), _text(row.get("rejected"))
    left, right = word_diff(rejected, chosen)  # rejected's own words "del", chosen's own words "ins"
    candidates = _candidates(steps)
    verdicts = {s.get("index"): s for s in steps if s.get("kind") == "verdict"}
    comparisons: list[Comparison] = []
    for c in candidates:
        verdict = verdicts.get(c.index) or {}
        meta = trace_meta(verdict)
        c.rationale = verdict.get("text") or ""
        c.judges = [j for j in meta.get("judges") or [] if isinstance(j, dict)]
        if isinstance(meta.get("aggregator"), dict):
            c.judges.append(meta["aggregator"] | {"judge": f"aggregator {meta['aggregator'].get('judge', '')}"})
        comparisons += [_comparison(c.index, p) for p in meta.get("pairs") or [] if isinstance(p, dict)]
    picks = {c.pick: c.index for c in candidates if c.pick}
    for comp in comparisons:
        comp.is_pair = {comp.first, comp.second} == {picks.get("chosen"), picks.get("rejected")}
    sc, sr = row.get("score_chosen"), row.get("score_rejected")
    margin = sc - sr if sc is not None and sr is not None else None
    methods = manifest.get("methods")
    scorer = (methods.get("scorer") if isinstance(methods, dict) else None) or ""
    others = [s | {"details": trace_meta(s)} for s in steps if s.get("kind") not in ("sample", "verdict")]
    why = _why(row, candidates, margin, manifest)
    return Pair(row, right, left, margin, why, candidates, comparisons, scorer, others)


def _text(messages: Any) -> str:
    return (messages or [{}])[-1].get("content") or "" if isinstance(messages, list) else ""


def _candidates(steps: list[dict[str, Any]]) -> list[Candidate]:
    out = []
    for s in sorted((s for s in steps if s.get("kind") == "sample"), key=lambda s: s.get("index") or 0):
        meta = trace_meta(s)
        out.append(Candidate(
            s.get("index") or 0, s.get("text") or "", s.get("score"), s.get("model") or "", meta.get("pick") or "",
            int(meta.get("count") or 1), s.get("finish_reason") or "", meta.get("dropped") or "",
            int(s.get("prompt_tokens") or 0) + int(s.get("completion_tokens") or 0),
        ))  # fmt: skip
    return out


def _rationale(raw: Any) -> str:
    """A pairwise reply's `rationale` (its JSON), else the reply itself; of several attempts, the last
    (the one that was read)."""
    if isinstance(raw, list):
        raw = raw[-1] if raw else ""
    if not isinstance(raw, str):
        return ""
    for found in json_objects(raw):
        if isinstance(found, dict) and isinstance(found.get("rationale"), str):
            return found["rationale"]
        if isinstance(found, dict) and "winner" in found:
            return "(a verdict only: no rationale was asked for)"
    return raw.strip()


def _comparison(index: int, pair: dict[str, Any]) -> Comparison:
    orders = pair.get("orders")
    odds = (float(orders[0]), float(orders[1])) if isinstance(orders, list) and len(orders) == 2 else None
    weighted = pair.get("weighted_outcome")
    return Comparison(
        index, int(pair.get("other") or 0), str(pair.get("judge") or ""), pair.get("ab"), pair.get("ba"),
        _rationale(pair.get("raw_ab")), _rationale(pair.get("raw_ba")), _OUTCOME.get(pair.get("outcome"), "?"),
        pair.get("agree"), str(pair.get("error") or ""), odds=odds,
        weighted=f"{_OUTCOME.get(weighted, '?')} (P {pair.get('preference')})" if weighted else "",
    )  # fmt: skip


def _min_margin(pref: dict[str, Any]) -> float:
    """The run's min_margin in its scores' units (unset: the scorer kind's default, moaa.config.scales)."""
    from moaa.config.preference_stage import PreferenceConfig

    try:
        return PreferenceConfig.model_validate(pref).margin()
    except ValueError:  # a manifest written by another version of moaa: its raw number, if one
        value = pref.get("min_margin")
        return float(value) if isinstance(value, (int, float)) else 0.0


def _why(row: dict[str, Any], candidates: list[Candidate], margin: float | None, manifest: dict[str, Any]) -> list[str]:
    """Why this pair was written: moaa.preference.pairs' rules with this run's settings."""
    pref = (manifest.get("config") or {}).get("preference") or {}
    scored = [c for c in candidates if c.score is not None]
    picks = {c.pick: c for c in candidates if c.pick}
    lines = []
    if "chosen" in picks and "rejected" in picks:
        lines.append(f"chosen #{picks['chosen'].index} has the highest score and rejected #{picks['rejected'].index} "
                     f"the lowest of {len(scored)} scored candidates")  # fmt: skip
    if margin is not None:
        floor = _min_margin(pref)
        lines.append(f"margin {margin:.3g} ≥ min_margin {floor:g}" if floor else f"margin {margin:.3g} > 0 (no tie)")
    chosen, rejected = len(_text(row.get("chosen"))), len(_text(row.get("rejected")))
    ratio = chosen / max(rejected, 1)
    limit = pref.get("max_length_ratio")
    if not limit:
        lines.append(f"length chosen / rejected {ratio:.2f} (no length-ratio limit)")
    elif ratio <= limit:
        lines.append(f"length chosen / rejected {ratio:.2f} ≤ max_length_ratio {limit:g}")
    else:
        lines.append(f"length chosen / rejected {ratio:.2f} > max_length_ratio {limit:g}: the run's settings "
                     "now would drop this pair")  # fmt: skip
    verdict = row.get("verification")
    if isinstance(verdict, dict):
        sides = [f"{side} {(verdict.get(side) or {}).get('status') or 'unchecked'}" for side in ("chosen", "rejected")]
        lines.append("verification: " + ", ".join(sides))
    return lines
