"""The pairwise judge (MT-Bench; weighted: AlpacaEval 2) behind the Scorer interface.

PairwiseJudge: every pair of candidates, every judge, both orders; a disagreement between the
orders is a tie. Score = (wins + 0.5 ties) / comparisons, in [0, 1], counting only the judges that
compared every pair while any did (`complete_judges`). Weighted (AlpacaEval 2): each order's verdict
is the judge's probability mass on "A" vs "B" (a tie's split evenly), the pair's preference the mean
over both orders, and the score the mean preference over the candidate's comparisons; a preference
within `tie_threshold` of 0.5 is tallied as a tie. A pair is recorded (and paid) once, on its lower
index. What it shares with the other judges (JudgePanel, judge_name, retries through
scoring.ask_parsed) lives in moaa.preference.judges.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from moaa.models.agent_calls import json_format
from moaa.models.client import Message
from moaa.preference.candidates import Candidate, conversation_of
from moaa.preference.judges import WEIGHTED_TOP_LOGPROBS, Judge, JudgePanel, judge_name
from moaa.preference.score_details import PairRecord, ScoreDetail
from moaa.preference.scoring import Score, Verdict, ask_parsed, usage
from moaa.preference.verdicts import parse_winner, winner_probabilities
from moaa.prompts.judging import (
    PAIRWISE,
    PAIRWISE_SCHEMA,
    PAIRWISE_VERDICT_ONLY,
    PAIRWISE_VERDICT_SCHEMA,
    pairwise_messages,
)
from moaa.rows import Prompt

_ORDER_AB = {"A": "first", "B": "second", "tie": "tie"}
_ORDER_BA = {"A": "second", "B": "first", "tie": "tie"}
_PREFERENCE = {"first": 1.0, "tie": 0.5, "second": 0.0}  # a hard outcome as the first candidate's preference


def combine_orders(ab: str | None, ba: str | None) -> tuple[str | None, bool | None]:
    """(outcome for the pair's first candidate: "first"/"second"/"tie", orders agree?) from both
    orders' winners ("A"/"B"/"tie"); (None, None) when either order went unanswered."""
    if ab is None or ba is None:
        return None, None
    first, second = _ORDER_AB[ab], _ORDER_BA[ba]
    return (first, True) if first == second else ("tie", False)


def outcome_of(preference: float, tie_threshold: float) -> str:
    """A continuous preference for the first candidate as "first", "second" or "tie" (within
    `tie_threshold` of 0.5)."""
    if abs(preference - 0.5) <= tie_threshold:
        return "tie"
    return "first" if preference > 0.5 else "second"


def rank_pairwise(
    n: int, outcomes: list[tuple[int, int, float | None]], tie_threshold: float = 0.0
) -> list[tuple[float | None, dict[str, int]]]:
    """Per candidate: its mean preference over its comparisons (None without any) and the tallies.

    `outcomes`: (i, j, the preference for i over j in [0, 1], None when unjudged). With hard
    verdicts the preference is 1, 0.5 or 0, and the mean is (wins + 0.5 ties) / comparisons; with
    weighted ones it is AlpacaEval 2's weighted win rate. A tally counts a preference within
    `tie_threshold` of 0.5 as a tie."""
    tally = [{"wins": 0, "ties": 0, "losses": 0} for _ in range(n)]
    won: list[list[float]] = [[] for _ in range(n)]
    for i, j, preference in outcomes:
        if preference is None:
            continue
        won[i].append(preference)
        won[j].append(1.0 - preference)
        outcome = outcome_of(preference, tie_threshold)
        if outcome == "tie":
            tally[i]["ties"] += 1
            tally[j]["ties"] += 1
        else:
            winner, loser = (i, j) if outcome == "first" else (j, i)
            tally[winner]["wins"] += 1
            tally[loser]["losses"] += 1
    return [(statistics.fmean(w) if w else None, t) for w, t in zip(won, tally, strict=True)]


def order_preference(ab: Verdict, ba: Verdict) -> tuple[float, float] | None:
    """(P(first candidate better) when shown first, the same when shown second) from each order's
    probability mass on the letters (a tie's mass split evenly); None unless both orders have it
    and its letter is the verdict read from the text."""
    found = []
    for verdict, shown_first in ((ab, True), (ba, False)):
        got = winner_probabilities(verdict.logprobs) if verdict.logprobs and verdict.parsed else None
        if got is None or got[0] != verdict.parsed:
            return None
        mass = got[1]
        first = mass["A"] + 0.5 * mass["tie"]
        found.append(round(first if shown_first else 1.0 - first, 4))
    return found[0], found[1]


def complete_judges(outcomes: list[tuple[int, int, int, float | None]], judges: int) -> set[int]:
    """The judges to count: those that judged every pair, while any did; else all of them."""
    complete = {k for k in range(judges) if all(p is not None for j, _, _, p in outcomes if j == k)}
    return complete or set(range(judges))


class PairwiseJudge(JudgePanel):
    kind = "pairwise"

    def __init__(self, *args: Any, tie_threshold: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tie_threshold = tie_threshold  # weighted: a preference this close to 0.5 is tallied a tie

    async def _ask(self, judge: Judge, convo: list[Message], first: str, second: str) -> Verdict:
        agent, client = judge
        template, schema = (PAIRWISE, PAIRWISE_SCHEMA) if self.rationales else \
            (PAIRWISE_VERDICT_ONLY, PAIRWISE_VERDICT_SCHEMA)  # fmt: skip
        return await ask_parsed(
            client,
            agent,
            pairwise_messages(convo, first, second, self.criteria, self.rationales),
            parse_winner,
            tag=template.tag("pref", "judge"),
            max_attempts=self.max_attempts,
            top_logprobs=WEIGHTED_TOP_LOGPROBS if self.weighted else None,
            explain=lambda t: 'it named no winner: give "winner" as "A", "B" or "tie"',
            response_format=json_format(client, "pairwise_verdict", schema),
        )

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        convo = conversation_of(prompt.messages)
        jobs = [
            (k, i, j)
            for k in range(len(self.judges))
            for i in range(len(candidates))
            for j in range(i + 1, len(candidates))
        ]
        asked = await asyncio.gather(
            *(
                asyncio.gather(
                    self._ask(self.judges[k], convo, candidates[i].text, candidates[j].text),
                    self._ask(self.judges[k], convo, candidates[j].text, candidates[i].text),
                )
                for k, i, j in jobs
            )
        )
        pairs: list[list[PairRecord]] = [[] for _ in candidates]
        spent: list[list[Verdict]] = [[] for _ in candidates]
        hard, weighted = [], []
        for (k, i, j), (ab, ba) in zip(jobs, asked, strict=True):
            outcome, agree = combine_orders(ab.parsed, ba.parsed)
            orders = order_preference(ab, ba) if self.weighted and outcome is not None else None
            preference = round(statistics.fmean(orders), 4) if orders else None
            hard.append((k, i, j, _PREFERENCE[outcome] if outcome else None))
            weighted.append((k, i, j, preference if orders else hard[-1][3]))
            spent[i] += [ab, ba]  # a pair is recorded (and paid) once, on its lower index
            record = PairRecord(judge_name(*self.judges[k]), j, ab.parsed, ba.parsed, outcome, agree, ab.raw, ba.raw)
            if orders and preference is not None:
                record.preference, record.orders = preference, list(orders)
                record.weighted_outcome = outcome_of(preference, self.tie_threshold)
            record.error = (ab.error or ba.error) if outcome is None else None
            pairs[i].append(record)
        counted = complete_judges(hard, len(self.judges))  # every candidate compared by the same judges
        used = weighted if self.weighted else hard
        ranked = rank_pairwise(len(candidates), [(i, j, p) for k, i, j, p in used if k in counted], self.tie_threshold)
        by_letter = rank_pairwise(len(candidates), [(i, j, p) for k, i, j, p in hard if k in counted])
        scores = []
        for c, ((value, tally), (letters, _)) in enumerate(zip(ranked, by_letter, strict=True)):
            why = f"won {tally['wins']}, tied {tally['ties']}, lost {tally['losses']} comparisons"
            details = ScoreDetail(pairs=pairs[c], usage=usage(spent[c]), wins=tally["wins"], ties=tally["ties"],
                                  losses=tally["losses"])  # fmt: skip
            if self.weighted:
                details.hard_score = letters  # what the letters alone give, beside the weighted score
            if len(counted) < len(self.judges):
                details.panel = [judge_name(*self.judges[k]) for k in sorted(counted)]
            scores.append(Score(value, why if value is not None else "", details))
        return scores
