"""LLM judges behind the Scorer interface: pointwise rubric, pairwise in both orders, the MoA judge.

- PointwiseJudge (UltraFeedback): every judge rates each candidate on the criteria (the four
  UltraFeedback aspects unless `scorer.criteria` names others), 1-5; a judge's overall is the mean
  of its ratings and the candidate's score the mean over judges that answered.
- PairwiseJudge (MT-Bench): every pair of candidates, every judge, both orders; a disagreement
  between the orders is a tie. Score = (wins + 0.5 ties) / comparisons, in [0, 1].
- MoAJudge (MoAA, ALGORITHMS.md section 2): optionally one call picks the `num_criteria` most
  relevant criteria; the judges rate each candidate pointwise; the aggregator reads their verdicts
  (numbered from 1) and gives the final ratings, whose mean is the score. The paper reports (no
  code) that its MoA judge also compares pairs in both orders; here pointwise verdicts keep the
  cost at (judges + 1) x K calls, and `kind: pairwise` is the both-orders judge.
Judges run at temperature 0; an unparsable answer is asked again up to `max_attempts`, each re-ask
showing the judge its last answer and what was wrong with it (scoring.ask_parsed).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from typing import Any

from moaa.config import AgentConfig
from moaa.engine.context import json_format
from moaa.models.client import ChatClient, Message
from moaa.preference.candidates import Candidate, conversation_of
from moaa.preference.scoring import Score, Verdict, ask_parsed, usage
from moaa.preference.verdicts import parse_criteria, parse_ratings, parse_winner, ratings_problem, weighted_ratings
from moaa.prompts import judging as jp
from moaa.rows import Prompt

log = logging.getLogger(__name__)

Judge = tuple[AgentConfig, ChatClient]


def judge_name(agent: AgentConfig, client: ChatClient) -> str:
    return agent.name or client.model


WEIGHTED_TOP_LOGPROBS = 5  # enough to hold the digits a judge hesitates between


async def rate(
    judges: list[Judge],
    convo: list[Message],
    text: str,
    criteria: list[jp.Criterion],
    max_attempts: int,
    weighted: bool = False,
    rationales: bool = True,
) -> list[Verdict]:
    """Every judge's pointwise verdict on one answer (parsed = (ratings, rationales) or None).

    `weighted`: each rating becomes its probability-weighted mean over 1-5 (verdicts.weighted_ratings)
    where the endpoint returns log-probabilities; otherwise it stays the digit the judge wrote.
    """
    messages = jp.pointwise_messages(convo, text, criteria, rationales)
    schema = jp.verdict_schema(criteria, rationales)
    verdicts = list(
        await asyncio.gather(
            *(
                ask_parsed(
                    client,
                    agent,
                    messages,
                    lambda t: parse_ratings(t, criteria),
                    tag=(jp.POINTWISE if rationales else jp.POINTWISE_RATINGS_ONLY).tag("pref", "judge"),
                    response_format=json_format(client, "verdict", schema),
                    max_attempts=max_attempts,
                    top_logprobs=WEIGHTED_TOP_LOGPROBS if weighted else None,
                    explain=lambda t: ratings_problem(t, criteria),
                )
                for agent, client in judges
            )
        )
    )
    if weighted:
        for verdict in verdicts:
            weigh(verdict, criteria)
    return verdicts


def weigh(verdict: Verdict, criteria: list[jp.Criterion]) -> None:
    """Replace a parsed verdict's digit ratings with their probability-weighted means, in place,
    when its log-probabilities hold one rating per criterion, each at the digit read from the text."""
    if verdict.parsed is None or not verdict.logprobs:
        return
    ratings, rationales = verdict.parsed
    found = weighted_ratings(verdict.logprobs)
    if [d for d, _ in found] != [ratings[c.key] for c in criteria]:
        return  # the tokens do not line up with the ratings read from the text: keep the digits
    verdict.parsed = ({c.key: round(w, 4) for (_, w), c in zip(found, criteria, strict=True)}, rationales)
    verdict.weighted = True


def overall(ratings: dict[str, float]) -> float:
    return statistics.fmean(ratings.values())


def judge_records(judges: list[Judge], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    records = []
    for (agent, client), v in zip(judges, verdicts, strict=True):
        record: dict[str, Any] = {"judge": judge_name(agent, client), **v.summary()}
        if v.parsed is not None:
            ratings, rationales = v.parsed
            record |= {"overall": overall(ratings), "ratings": ratings, "rationales": rationales}
        records.append(record)
    return records


def rationale_text(rationales: dict[str, str]) -> str:
    return "\n".join(f"{key}: {text}" for key, text in rationales.items() if text)


def judges_label(judges: list[Judge]) -> str:
    return ",".join(judge_name(agent, client) for agent, client in judges)


class PointwiseJudge:
    kind = "pointwise"

    def __init__(
        self,
        judges: list[Judge],
        criteria: list[jp.Criterion],
        max_attempts: int,
        weighted: bool = False,
        rationales: bool = True,
    ):
        self.judges, self.criteria, self.max_attempts = judges, criteria, max_attempts
        self.weighted, self.rationales = weighted, rationales
        self.label = judges_label(judges)

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        convo = conversation_of(prompt.messages)
        return list(await asyncio.gather(*(self._one(convo, c) for c in candidates)))

    async def _one(self, convo: list[Message], candidate: Candidate) -> Score:
        verdicts = await rate(
            self.judges, convo, candidate.text, self.criteria, self.max_attempts, self.weighted, self.rationales
        )
        records = judge_records(self.judges, verdicts)
        details: dict[str, Any] = {
            "criteria": [c.key for c in self.criteria],
            "judges": records,
            "usage": usage(verdicts),
        }
        rated = [r for r in records if "overall" in r]
        if not rated:
            return Score(None, "", details | {"error": "; ".join(v.error for v in verdicts if v.error)})
        keys = [c.key for c in self.criteria]
        details["ratings"] = {k: statistics.fmean(r["ratings"][k] for r in rated) for k in keys}
        why = "\n\n".join(f"[{r['judge']}]\n{rationale_text(r['rationales'])}" for r in rated)
        return Score(statistics.fmean(r["overall"] for r in rated), why, details)


# ---------------------------------------------------------------- pairwise

_ORDER_AB = {"A": "first", "B": "second", "tie": "tie"}
_ORDER_BA = {"A": "second", "B": "first", "tie": "tie"}


def combine_orders(ab: str | None, ba: str | None) -> tuple[str | None, bool | None]:
    """(outcome for the pair's first candidate: "first"/"second"/"tie", orders agree?) from both
    orders' winners ("A"/"B"/"tie"); (None, None) when either order went unanswered."""
    if ab is None or ba is None:
        return None, None
    first, second = _ORDER_AB[ab], _ORDER_BA[ba]
    return (first, True) if first == second else ("tie", False)


def rank_pairwise(n: int, outcomes: list[tuple[int, int, str | None]]) -> list[tuple[float | None, dict[str, int]]]:
    """Per candidate: (wins + 0.5 ties) / comparisons (None without any) and the tallies."""
    tally = [{"wins": 0, "ties": 0, "losses": 0} for _ in range(n)]
    for i, j, outcome in outcomes:
        if outcome is None:
            continue
        if outcome == "tie":
            tally[i]["ties"] += 1
            tally[j]["ties"] += 1
        else:
            winner, loser = (i, j) if outcome == "first" else (j, i)
            tally[winner]["wins"] += 1
            tally[loser]["losses"] += 1
    ranked = []
    for t in tally:
        compared = t["wins"] + t["ties"] + t["losses"]
        ranked.append(((t["wins"] + 0.5 * t["ties"]) / compared if compared else None, t))
    return ranked


class PairwiseJudge:
    kind = "pairwise"

    def __init__(self, judges: list[Judge], criteria: list[jp.Criterion], max_attempts: int):
        self.judges, self.criteria, self.max_attempts = judges, criteria, max_attempts
        self.label = judges_label(judges)

    async def _ask(self, judge: Judge, convo: list[Message], first: str, second: str) -> Verdict:
        agent, client = judge
        return await ask_parsed(
            client,
            agent,
            jp.pairwise_messages(convo, first, second, self.criteria),
            parse_winner,
            tag=jp.PAIRWISE.tag("pref", "judge"),
            max_attempts=self.max_attempts,
            explain=lambda t: 'it named no winner: give "winner" as "A", "B" or "tie"',
            response_format=json_format(client, "pairwise_verdict", jp.PAIRWISE_SCHEMA),
        )

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        convo = conversation_of(prompt.messages)
        jobs = [
            (judge, i, j)
            for judge in self.judges
            for i in range(len(candidates))
            for j in range(i + 1, len(candidates))
        ]
        asked = await asyncio.gather(
            *(
                asyncio.gather(
                    self._ask(judge, convo, candidates[i].text, candidates[j].text),
                    self._ask(judge, convo, candidates[j].text, candidates[i].text),
                )
                for judge, i, j in jobs
            )
        )
        pairs: list[list[dict[str, Any]]] = [[] for _ in candidates]
        spent: list[list[Verdict]] = [[] for _ in candidates]
        outcomes = []
        for (judge, i, j), (ab, ba) in zip(jobs, asked, strict=True):
            outcome, agree = combine_orders(ab.parsed, ba.parsed)
            outcomes.append((i, j, outcome))
            spent[i] += [ab, ba]  # a pair is recorded (and paid) once, on its lower index
            pairs[i].append(
                {
                    "judge": judge_name(*judge),
                    "other": j,
                    "ab": ab.parsed,
                    "ba": ba.parsed,
                    "outcome": outcome,
                    "agree": agree,
                    "raw_ab": ab.raw,
                    "raw_ba": ba.raw,
                    **({"error": ab.error or ba.error} if outcome is None else {}),
                }
            )
        scores = []
        for k, (value, tally) in enumerate(rank_pairwise(len(candidates), outcomes)):
            why = f"won {tally['wins']}, tied {tally['ties']}, lost {tally['losses']} comparisons"
            details = {"pairs": pairs[k], "usage": usage(spent[k]), **tally}
            scores.append(Score(value, why if value is not None else "", details))
        return scores


# ---------------------------------------------------------------- MoA judge


class MoAJudge:
    kind = "moa_judge"

    def __init__(
        self,
        judges: list[Judge],
        aggregator: Judge,
        criteria_names: list[str] | None,
        num_criteria: int,
        max_attempts: int,
    ):
        self.judges, self.aggregator = judges, aggregator
        self.criteria_names, self.num_criteria, self.max_attempts = criteria_names, num_criteria, max_attempts
        self.label = f"{judges_label(judges)}->{judge_name(*aggregator)}"

    async def select_criteria(self, convo: list[Message]) -> tuple[list[jp.Criterion], dict[str, Any]]:
        """The criteria for this prompt: all when few enough, else the aggregator's pick (first N on failure)."""
        names = self.criteria_names
        if not names:
            return list(jp.ASPECTS), {}
        if len(names) <= self.num_criteria:
            return [jp.criterion_of(n) for n in names], {}
        agent, client = self.aggregator
        verdict = await ask_parsed(
            client,
            agent,
            jp.criteria_messages(convo, names, self.num_criteria),
            lambda t: parse_criteria(t, names, self.num_criteria),
            tag=jp.SELECT_CRITERIA.tag("pref", "aggregator"),
            response_format=json_format(client, "criteria", jp.CRITERIA_SCHEMA),
            max_attempts=self.max_attempts,
            explain=lambda t: "it named none of the listed criteria",
        )
        picked = verdict.parsed or names[: self.num_criteria]
        record = {"picked": picked, "fallback": verdict.parsed is None, **verdict.summary(), "usage": usage([verdict])}
        return [jp.criterion_of(n) for n in picked], record

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        convo = conversation_of(prompt.messages)
        criteria, selection = await self.select_criteria(convo)
        scores = list(await asyncio.gather(*(self._one(convo, c, criteria) for c in candidates)))
        if selection and scores:
            scores[0].details["criteria_selection"] = selection
        return scores

    async def _one(self, convo: list[Message], candidate: Candidate, criteria: list[jp.Criterion]) -> Score:
        verdicts = await rate(self.judges, convo, candidate.text, criteria, self.max_attempts)
        records = judge_records(self.judges, verdicts)
        details: dict[str, Any] = {"criteria": [c.key for c in criteria], "judges": records}
        shown = [jp.render_verdict(*v.parsed, criteria) for v in verdicts if v.parsed is not None]
        if not shown:
            details["usage"] = usage(verdicts)
            return Score(None, "", details | {"error": "no judge gave a verdict"})
        agent, client = self.aggregator
        final = await ask_parsed(
            client,
            agent,
            jp.aggregate_messages(convo, candidate.text, shown, criteria),
            lambda t: parse_ratings(t, criteria),
            tag=jp.MOA_AGGREGATE.tag("pref", "aggregator"),
            response_format=json_format(client, "verdict", jp.verdict_schema(criteria)),
            max_attempts=self.max_attempts,
            explain=lambda t: ratings_problem(t, criteria),
        )
        details["usage"] = usage([*verdicts, final])
        details["aggregator"] = {"judge": judge_name(agent, client), **final.summary()}
        if final.parsed is None:
            return Score(None, "", details | {"error": final.error})
        ratings, rationales = final.parsed
        details |= {"ratings": ratings, "rationales": rationales}
        return Score(overall(ratings), rationale_text(rationales), details)
