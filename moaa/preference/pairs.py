"""Best-vs-worst DPO pairs from scored candidates (MoAA, ALGORITHMS.md section 2; distilabel's rule).

chosen = the highest-scored candidate, rejected = the lowest (ties broken by the earlier
candidate). A prompt yields no pair, with a reason, when:
- too_few_candidates: fewer than two distinct answers;
- too_few_scored: fewer than two candidates got a score;
- tie: best and worst scored alike (or, defensively, share a text);
- near_tie: their margin is below `min_margin` (in the scorer's units): near-ties add label noise;
- length_ratio: len(chosen) / len(rejected) exceeds `max_length_ratio` (a length-bias guard).
With a pairing rule (moaa.preference.pool.Sides) only the pairs it allows compete: the allowed pair
of the largest margin is taken (ties: the earlier chosen, then the earlier rejected), and also:
- side_missing: no allowed pair has two scored candidates (the agent the rule names gave none);
- reversed: the rule fixes the order (delta) and the scorer ranks the weaker side above the stronger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from moaa.models.client import Message
from moaa.preference.candidates import normalise
from moaa.rows import PreferenceRow

if TYPE_CHECKING:
    from moaa.preference.pool import Sides

DROP_REASONS = ("too_few_candidates", "too_few_scored", "tie", "near_tie", "length_ratio", "side_missing", "reversed")
TIE_REASONS = ("tie", "near_tie")
_EPS = 1e-9  # scores such as 4.5 - 4.0 must meet a 0.5 margin despite float rounding


@dataclass(frozen=True)
class PairChoice:
    """Indices of the chosen and rejected candidates, or the reason there is no pair."""

    chosen: int | None = None
    rejected: int | None = None
    reason: str | None = None


def choose_pair(
    texts: list[str],
    scores: list[float | None],
    min_margin: float = 0.0,
    max_length_ratio: float | None = None,
    sides: Sides | None = None,
) -> PairChoice:
    """Best vs worst of the scored candidates (of the pairs `sides` allows), or a PairChoice with a drop reason."""
    if len(texts) < 2:
        return PairChoice(reason="too_few_candidates")
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return PairChoice(reason="too_few_scored")
    if sides is None:
        best_score, best = min(scored, key=lambda p: (-p[0], p[1]))
        worst_score, worst = min(scored)
    else:
        allowed = [(b - w, i, j) for b, i in scored for w, j in scored if sides.allows(i, j)]
        if not allowed:
            return PairChoice(reason="side_missing")
        margin, best, worst = min(allowed, key=lambda p: (-p[0], p[1], p[2]))
        if margin < -_EPS:
            return PairChoice(reason="reversed")
        best_score, worst_score = scores[best], scores[worst]
        assert best_score is not None and worst_score is not None
    margin = best_score - worst_score
    if margin <= _EPS or best == worst or normalise(texts[best]) == normalise(texts[worst]):
        return PairChoice(reason="tie")
    if margin + _EPS < min_margin:
        return PairChoice(reason="near_tie")
    if max_length_ratio is not None and len(texts[best]) > max_length_ratio * max(len(texts[worst]), 1):
        return PairChoice(reason="length_ratio")
    return PairChoice(best, worst)


def build_row(
    prompt_id: str,
    conversation: list[Message],
    chosen: str,
    rejected: str,
    score_chosen: float,
    score_rejected: float,
    chosen_model: str,
    rejected_model: str,
    chosen_agent: str = "policy",
    rejected_agent: str = "policy",
) -> PreferenceRow:
    """A TRL preference row with an explicit prompt: chosen/rejected are one assistant message each."""
    return PreferenceRow(
        prompt_id=prompt_id,
        prompt=conversation,
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
        score_chosen=float(score_chosen),
        score_rejected=float(score_rejected),
        chosen_model=chosen_model,
        rejected_model=rejected_model,
        chosen_agent=chosen_agent,
        rejected_agent=rejected_agent,
    )
