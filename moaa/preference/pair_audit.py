"""The pairwise audit of a chosen pair (`preference.pair_audit`): does the judge agree with the pair?

Once a pair is chosen, the scorer's judges compare its chosen and rejected answers head to head, in
both orders (moaa.preference.pairwise_judge, weighted), and each judge's comparison is read two ways
side by side: by the letters it wrote (MT-Bench: orders that disagree are a tie) and by its
log-probabilities (AlpacaEval 2: the mean probability mass on the chosen side over both orders,
within `scorer.tie_threshold` of 0.5 a tie). No row changes. The counters say how often the judge
ties the pair or ranks its rejected side first; where the rejected answer failed its check (a
verified pair), ranking it first is preferring a wrong answer: the figure that says whether the
judge can tell right from wrong, hard letters against weighted.

    judge = build_audit(pref.scorer, clients)              # moaa.preference.stage
    counters, step = await audit_pair(judge, prompt, chosen, rejected, wrong_rejected(row))
"""

from __future__ import annotations

import json

from moaa.preference.candidates import Candidate
from moaa.preference.pairwise_judge import PairwiseJudge
from moaa.preference.score_details import PairRecord, Usage
from moaa.rows import PreferenceRow, Prompt, TraceStep

STAGE = "preference"
# Per comparison (one judge, both orders): "hard" read from the letters, "weighted" from log-probabilities.
AUDIT_COUNTERS = (
    "audited",  # pairs audited
    "audit_comparisons",  # comparisons with a verdict in both orders
    "audit_unparsed",  # comparisons without one (an order unanswered or unparsed)
    "audit_ties_hard",
    "audit_rejected_first_hard",
    "audit_weighted",  # comparisons the endpoint returned log-probabilities for
    "audit_ties_weighted",
    "audit_rejected_first_weighted",
    "audit_checked",  # comparisons of pairs whose rejected answer failed its check
    "audit_wrong_first_hard",
    "audit_wrong_first_weighted",
)


def wrong_rejected(row: PreferenceRow) -> bool:
    """Whether the written pair's rejected answer failed its check where its chosen answer passed."""
    verdicts = row.verification or {}
    chosen, rejected = (verdicts.get(side) or {} for side in ("chosen", "rejected"))
    return chosen.get("status") == "pass" and rejected.get("status") == "fail"


def tally(records: list[PairRecord], wrong_rejected: bool) -> dict[str, int]:
    """The counters of one pair's comparisons (`records`: the chosen answer's, the rejected second)."""
    counters = dict.fromkeys(AUDIT_COUNTERS, 0)
    counters["audited"] = 1
    for record in records:
        if record.outcome is None:
            counters["audit_unparsed"] += 1
            continue
        counters["audit_comparisons"] += 1
        counters["audit_checked"] += wrong_rejected
        readings = [("hard", record.outcome)]
        if record.weighted_outcome is not None:
            counters["audit_weighted"] += 1
            readings.append(("weighted", record.weighted_outcome))
        for how, outcome in readings:
            counters[f"audit_ties_{how}"] += outcome == "tie"
            counters[f"audit_rejected_first_{how}"] += outcome == "second"
            counters[f"audit_wrong_first_{how}"] += outcome == "second" and wrong_rejected
    return {key: n for key, n in counters.items() if n}


async def audit_pair(
    judge: PairwiseJudge, prompt: Prompt, chosen: Candidate, rejected: Candidate, wrong_rejected: bool
) -> tuple[dict[str, int], TraceStep]:
    """Ask `judge` to compare the pair; its counters (tally) and one `audit` trace step (meta: each
    judge's comparison, both orders' letters and probabilities)."""
    (score, _) = await judge.score(prompt, [chosen, rejected])
    records = score.details.pairs or []
    spent = score.details.usage or Usage()
    step = TraceStep(
        prompt_id=prompt.prompt_id,
        stage=STAGE,
        kind="audit",
        text=score.rationale,
        agent=judge.kind,
        model=judge.label,
        role="judge",
        prompt_tokens=spent.prompt_tokens,
        completion_tokens=spent.completion_tokens,
        score=score.score,  # the chosen answer's preference over the rejected one, in [0, 1]
        meta=json.dumps({"wrong_rejected": wrong_rejected, **score.details.to_json()}, ensure_ascii=False, default=str),
    )
    return tally(records, wrong_rejected), step
