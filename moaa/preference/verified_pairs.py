"""Verified preference pairs: the `verifier` scorer, and the check every scorer's chosen side passes.

The verifier scorer (RLVR-style pair data; ALGORITHMS.md section 10) checks each candidate against
the prompt's reference (moaa.verify) and ranks by verdict: pass above fail, failures by the
fraction they passed (asserts, instructions). chosen = a passing candidate, rejected = a failing
one; among equals a tie-breaker decides (a judge, or the reward model: `verifier.tie_breaker`),
asked only when there is a tie to break. A prompt yields no verified pair, with a reason, when:
- all_failed: no candidate passed (always dropped: a chosen side is never a wrong answer);
- all_passed: none failed; with `verifier.all_passed: judge` the tie-breaker pairs the passing
  candidates instead (best vs worst, `min_margin` applies);
- unverifiable: the prompt has no check or none could run; with `verifier.unverifiable: judge`
  the tie-breaker pairs all candidates, as that scorer alone would;
- length_ratio: as for every scorer (`max_length_ratio`);
- with a pairing rule (moaa.preference.pool.Sides), only the pairs it allows: `reversed` where the
  rule fixes the order (delta) and only the weaker side passed, `side_missing` where no allowed
  pair has a passing and a failing answer.
A verified pair's scores are its verdicts' (1.0 passed); a pair the tie-breaker made has its scores.

Any other scorer, where a prompt has a check (`preference.verify: require`): its pair is dropped
(chosen_failed) when the chosen answer fails, and both verdicts are recorded (`keep` records only).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from moaa.config import PreferenceConfig, VerifierScorerConfig
from moaa.preference.candidates import Candidate
from moaa.preference.pairs import PairChoice, choose_pair
from moaa.preference.score_details import ScoreDetail
from moaa.preference.scoring import Score, Scorer
from moaa.rows import Prompt
from moaa.verify import Verdict, Verifier

if TYPE_CHECKING:
    from moaa.preference.pool import Sides

DROP_REASONS = ("all_failed", "all_passed", "unverifiable", "chosen_failed")  # and pairs.py's side rules


class VerifierScorer:
    """Scores = verdicts (details.verdict), tie-breaker scores where one was needed (details.tie_break)."""

    kind = "verifier"

    def __init__(self, verifier: Verifier, breaker: Scorer | None, cfg: VerifierScorerConfig):
        self.verifier, self.breaker, self.cfg = verifier, breaker, cfg
        self.label = f"verifier+{getattr(breaker, 'label', breaker.kind)}" if breaker is not None else "verifier"

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        checked = await asyncio.gather(*(self.verifier.check(prompt, c.text) for c in candidates))
        verdicts: list[Verdict | None] = list(checked)
        scores = [_verdict_score(v) for v in verdicts]
        contested = self._contested(verdicts)
        if contested and self.breaker is not None:
            broken = await self.breaker.score(prompt, [candidates[i] for i in contested])
            for i, tie in zip(contested, broken, strict=True):
                details = scores[i].details
                details.tie_break, details.usage = tie.score, tie.details.usage
                details.judge = replace(tie.details, usage=None)
        return scores

    def _contested(self, verdicts: list[Verdict | None]) -> list[int]:
        """The candidates the tie-breaker must order: every one where the verdicts cannot pair
        (falling back to the judge), else the passing ones when several pass, and the failing
        ones that share the lowest score."""
        passing = [i for i, v in enumerate(verdicts) if v is not None and v.passed]
        failing = [i for i, v in enumerate(verdicts) if v is not None and v.failed]
        if not passing and not failing:
            return list(range(len(verdicts))) if self.cfg.unverifiable == "judge" else []
        if not failing:
            return passing if self.cfg.all_passed == "judge" and len(passing) > 1 else []
        if not passing:
            return []
        lowest = min(_value(verdicts[i]) for i in failing)
        tied = [i for i in failing if _value(verdicts[i]) == lowest]
        return (passing if len(passing) > 1 else []) + (tied if len(tied) > 1 else [])

    def choose(
        self, texts: list[str], scores: list[Score], pref: PreferenceConfig, sides: Sides | None = None
    ) -> PairChoice:
        """The verified pair (see the module docstring), or the tie-breaker's, or a drop reason."""
        verdicts = [s.details.verdict for s in scores]
        paired = range(len(texts)) if sides is None else sorted(sides.up | sides.down)
        passing = [i for i in paired if verdicts[i] and verdicts[i]["status"] == "pass"]
        failing = [i for i in paired if verdicts[i] and verdicts[i]["status"] == "fail"]
        breaks = [s.details.tie_break for s in scores]
        if not passing and not failing:
            return self._judged(texts, breaks, paired, "unverifiable", self.cfg.unverifiable, pref, sides)
        if not failing:
            return self._judged(texts, breaks, passing, "all_passed", self.cfg.all_passed, pref, sides)
        if not passing:
            return PairChoice(reason="all_failed")
        up = lambda i: (-_number(breaks[i]), i)  # noqa: E731
        down = lambda i: (verdicts[i]["score"] or 0.0, _number(breaks[i]), -i)  # noqa: E731
        allowed = [(c, r) for c in passing for r in failing if sides is None or sides.allows(c, r)]
        if not allowed:
            return PairChoice(reason="reversed" if sides is not None and sides.directional else "side_missing")
        chosen, rejected = min(allowed, key=lambda p: (up(p[0]), down(p[1])))
        ratio = pref.max_length_ratio
        if ratio is not None and len(texts[chosen]) > ratio * max(len(texts[rejected]), 1):
            return PairChoice(reason="length_ratio")
        return PairChoice(chosen, rejected)

    def _judged(
        self, texts: list[str], breaks: list[Any], among: Any, reason: str, policy: str, pref: PreferenceConfig,
        sides: Sides | None,
    ) -> PairChoice:  # fmt: skip
        """The tie-breaker's best vs worst among `among` (its policy says judge), else a drop for `reason`."""
        among = list(among)
        if policy != "judge" or self.breaker is None or len(among) < 2:
            return PairChoice(reason=reason)
        if sides is not None:  # the same rule, on positions within `among`
            from moaa.preference.pool import Sides

            at = {i: n for n, i in enumerate(among)}
            up, down = (frozenset(at[i] for i in side if i in at) for side in (sides.up, sides.down))
            sides = Sides(up, down, sides.directional)
        choice = choose_pair(
            [texts[i] for i in among], [breaks[i] for i in among], pref.margin(), pref.max_length_ratio, sides
        )
        if choice.reason is not None:
            return choice
        assert choice.chosen is not None and choice.rejected is not None
        return PairChoice(among[choice.chosen], among[choice.rejected])

    def pair_scores(self, scores: list[Score], choice: PairChoice) -> tuple[float, float]:
        """The row's score_chosen / score_rejected: the verdicts' for a verified pair, else the tie-breaker's."""
        assert choice.chosen is not None and choice.rejected is not None
        chosen, rejected = scores[choice.chosen], scores[choice.rejected]
        if _status(chosen) == "pass" and _status(rejected) == "fail":
            return float(chosen.score or 0.0), float(rejected.score or 0.0)
        chosen_break, rejected_break = chosen.details.tie_break, rejected.details.tie_break
        assert chosen_break is not None and rejected_break is not None  # the tie-breaker paired them
        return float(chosen_break), float(rejected_break)


def _verdict_score(verdict: Verdict | None) -> Score:
    if verdict is None:
        return Score(None, "no check for this prompt", ScoreDetail(verified=True))
    value = None if verdict.status == "unverifiable" else _value(verdict)
    return Score(value, verdict.reason, ScoreDetail(verified=True, verdict=verdict.to_dict()))


def _value(verdict: Verdict | None) -> float:
    return float(verdict.score or 0.0) if verdict is not None else 0.0


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _status(score: Score) -> str | None:
    verdict = score.details.verdict
    return verdict["status"] if verdict else None


async def guard_pair(
    verifier: Verifier, prompt: Prompt, chosen: str, rejected: str
) -> tuple[Verdict | None, Verdict | None]:
    """The verdicts of another scorer's chosen and rejected answers (None, None: no check applies)."""
    if not verifier.kinds(prompt):
        return None, None
    got = await asyncio.gather(verifier.check(prompt, chosen), verifier.check(prompt, rejected))
    return got[0], got[1]


async def pair_verdicts(
    scorer: Scorer, scores: list[Score], choice: PairChoice, prompt: Prompt, texts: list[str], verifier: Verifier | None
) -> tuple[Verdict | None, Verdict | None]:
    """The verdicts of a pair's chosen and rejected answers: the verifier scorer's own, else checked
    now (`verifier`: preference.verify is not off); (None, None) where nothing is checked."""
    assert choice.chosen is not None and choice.rejected is not None
    if isinstance(scorer, VerifierScorer):
        return verdict_of(scores[choice.chosen]), verdict_of(scores[choice.rejected])
    if verifier is None:
        return None, None
    return await guard_pair(verifier, prompt, texts[choice.chosen], texts[choice.rejected])


def verdict_of(score: Score) -> Verdict | None:
    """The verdict a verifier score holds (None: its prompt has no check)."""
    data = score.details.verdict
    if not data:
        return None
    return Verdict(data["status"], data["reason"], data["score"], tuple(data["checks"]), data.get("details", {}))


def count_verdicts(counters: dict[str, int], verdicts: list[Verdict | None], prompt_checked: bool) -> None:
    """candidates_pass / _fail / _unverifiable per verdict; verify_none once for a prompt without a check."""
    if not prompt_checked:
        counters["verify_none"] = counters.get("verify_none", 0) + 1
        return
    for verdict in verdicts:
        if verdict is not None:
            key = f"candidates_{verdict.status}"
            counters[key] = counters.get(key, 0) + 1


def count_pair(counters: dict[str, int], chosen: Verdict | None, rejected: Verdict | None) -> None:
    """pairs_verified (chosen passed, rejected failed) or pairs_judged_passing (both passed)."""
    if chosen is not None and rejected is not None and chosen.passed:
        key = "pairs_verified" if rejected.failed else "pairs_judged_passing" if rejected.passed else ""
        if key:
            counters[key] = counters.get(key, 0) + 1


def verdict_trace(prompt: Prompt, verdicts: list[tuple[str, int, Verdict | None]]) -> list[Any]:
    """The trace's `verification` steps of the preference stage: (whose: candidate, chosen or rejected;
    the candidate's index; its verdict), those without a verdict left out."""
    from moaa.verify import trace_step

    return [
        trace_step(prompt.prompt_id, "preference", v, index=index, agent=whose)
        for whose, index, v in verdicts
        if v is not None
    ]
