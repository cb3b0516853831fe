"""The bias report of a preference data set: what a reader should check before training on it.

Length bias is the judges' best-known failure (AlpacaEval's length-controlled win rate exists
because of it), position bias the pairwise judges' (MT-Bench asks both orders to expose it).

Report keys:
- rows, prompts: pairs written; prompts that reached pair building (rows + drops).
- length_ratio_mean, length_ratio_median: len(chosen) / len(rejected) in characters, over rows.
- chosen_longer_share: share of rows whose chosen answer is the longer one.
- score_length_pearson, scored_candidates: Pearson r of score vs length over every scored
  candidate (trace steps of kind "sample"); None with fewer than two or no variance.
- pairs_judged, swap_disagreements, swap_disagreement_rate: pairwise judgements (one per pair and
  judge, both orders) and how many changed with the order.
- pair_tie_rate: share of those judgements that are ties by the written letters; weighted_tie_rate:
  the same judgements read from log-probabilities (weighted_ratings; None without any).
- dropped: drops per reason; tie_drop_share: share of prompts dropped as ties or near-ties.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from moaa.preference.pairs import TIE_REASONS
from moaa.preference.score_details import PairRecord
from moaa.rows import trace_meta


def _content(messages: Any) -> str:
    if isinstance(messages, list) and messages:
        return str(messages[-1].get("content") or "")
    return str(messages or "")


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def bias_report(rows: list[dict], trace: list[dict], drops: dict[str, int]) -> dict[str, Any]:
    """Length, position and tie statistics of a preference stage's output (see the module docstring)."""
    ratios, longer = [], 0
    for row in rows:
        chosen, rejected = len(_content(row["chosen"])), len(_content(row["rejected"]))
        ratios.append(chosen / max(rejected, 1))
        longer += chosen > rejected
    samples = [t for t in trace if t.get("kind") == "sample" and t.get("score") is not None]
    verdicts = [t for t in trace if t.get("kind") == "verdict"]
    pairs = [PairRecord.from_json(p) for t in verdicts for p in trace_meta(t).get("pairs", [])]
    judged = [p for p in pairs if p.agree is not None]
    disagreements = sum(1 for p in judged if p.agree is False)
    weighted = [p for p in judged if p.weighted_outcome is not None]
    prompts = len(rows) + sum(drops.values())
    ties = sum(drops.get(reason, 0) for reason in TIE_REASONS)
    return {
        "rows": len(rows),
        "prompts": prompts,
        "length_ratio_mean": statistics.fmean(ratios) if ratios else None,
        "length_ratio_median": statistics.median(ratios) if ratios else None,
        "chosen_longer_share": longer / len(rows) if rows else None,
        "score_length_pearson": pearson(
            [len(t.get("text") or "") for t in samples], [float(t["score"]) for t in samples]
        ),
        "scored_candidates": len(samples),
        "pairs_judged": len(judged),
        "swap_disagreements": disagreements,
        "swap_disagreement_rate": disagreements / len(judged) if judged else None,
        "pair_tie_rate": sum(1 for p in judged if p.outcome == "tie") / len(judged) if judged else None,
        "weighted_tie_rate": (
            sum(1 for p in weighted if p.weighted_outcome == "tie") / len(weighted) if weighted else None
        ),
        "dropped": dict(drops),
        "tie_drop_share": ties / prompts if prompts else None,
    }
