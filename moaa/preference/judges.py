"""LLM judges behind the Scorer interface: pointwise rubric, pairwise in both orders, the MoA judge.

- PointwiseJudge (UltraFeedback): every judge rates each candidate on the criteria (the four
  UltraFeedback aspects unless `scorer.criteria` names others), 1-5; a judge's overall is the mean
  of its ratings and the candidate's score the mean over the prompt's panel (`common_panel`): every
  scored candidate is averaged over the same judges, never over whichever answered.
- PairwiseJudge (MT-Bench): every pair of candidates, every judge, both orders; a disagreement
  between the orders is a tie. Score = (wins + 0.5 ties) / comparisons, in [0, 1], counting only
  the judges that compared every pair while any did (`complete_judges`). Weighted (AlpacaEval 2):
  each order's verdict is the judge's probability mass on "A" vs "B" (a tie's split evenly), the
  pair's preference the mean over both orders, and the score the mean preference over the
  candidate's comparisons; a preference within `tie_threshold` of 0.5 is tallied as a tie.
- MoAJudge (MoAA, ALGORITHMS.md section 2): one call picks the `num_criteria` most relevant
  criteria of the list (by default moaa's MoAA list, prompts.judging.MOAA_CRITERIA; none when the
  list is no longer than num_criteria); the judges rate each candidate pointwise; the aggregator reads their verdicts
  (numbered from 1) and gives the final ratings, whose mean is the score. The paper reports (no
  code) that its MoA judge also compares pairs in both orders; here pointwise verdicts keep the
  cost at (judges + 1) x K calls, and `kind: pairwise` is the both-orders judge.
Judges run at temperature 0; an unparsable answer is asked again up to `max_attempts`, each re-ask
showing the judge its last answer and what was wrong with it (scoring.ask_parsed). A verdict still
missing after that leaves its judge out of the panel or its candidate unscored (`missing_judge`).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from typing import Any

from moaa.config import AgentConfig
from moaa.models.agent_calls import json_format
from moaa.models.client import ChatClient, Message
from moaa.preference.candidates import Candidate, conversation_of
from moaa.preference.score_details import JudgeRecord, PairRecord, ScoreDetail
from moaa.preference.scoring import Score, Verdict, ask_parsed, usage
from moaa.preference.verdicts import (
    parse_criteria,
    parse_ratings,
    parse_winner,
    ratings_problem,
    weighted_ratings,
    winner_probabilities,
)
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
    verdict.hard = {c.key: float(ratings[c.key]) for c in criteria}
    verdict.parsed = ({c.key: round(w, 4) for (_, w), c in zip(found, criteria, strict=True)}, rationales)
    verdict.weighted = True


def overall(ratings: dict[str, float]) -> float:
    return statistics.fmean(ratings.values())


def judge_records(judges: list[Judge], verdicts: list[Verdict]) -> list[JudgeRecord]:
    records = []
    for (agent, client), v in zip(judges, verdicts, strict=True):
        record = v.record(judge_name(agent, client))
        if v.parsed is not None:
            record.ratings, record.rationales = v.parsed
            record.overall = overall(record.ratings)
            if v.hard is not None:  # the digits it wrote, beside their probability-weighted means
                record.hard_overall = overall(v.hard)
        records.append(record)
    return records


def _rated(record: JudgeRecord) -> dict[str, float]:
    assert record.ratings is not None  # a panel judge's record on a scored candidate
    return record.ratings


def common_panel(rated: list[list[bool]]) -> tuple[list[int], list[int]]:
    """(judges counted, candidates scored) for one prompt, so that every scored candidate is averaged
    over the same judges; `rated[c][j]`: judge j gave candidate c a verdict.

    While at least two candidates have every judge's verdict, those are scored over all judges and
    the others left unscored (a harsh judge failing on one answer would otherwise make it look
    better). Otherwise the judges that rated every candidate count, failing that the one that rated
    the most, and a candidate is scored when each of them rated it."""
    if not rated:
        return [], []
    judges = range(len(rated[0]))
    full = [c for c, row in enumerate(rated) if all(row)]
    if len(full) >= 2:
        return list(judges), full
    panel = [j for j in judges if all(row[j] for row in rated)]
    panel = panel or [max(judges, key=lambda j: sum(row[j] for row in rated))]
    return panel, [c for c, row in enumerate(rated) if all(row[j] for j in panel)]


def panel_of(verdicts: list[list[Verdict]]) -> tuple[list[int], list[int]]:
    """common_panel over the parsed verdicts of each candidate's judges."""
    return common_panel([[v.parsed is not None for v in row] for row in verdicts])


def missing_judges(judges: list[Judge], verdicts: list[Verdict], panel: list[int]) -> str:
    """Why a candidate is left out: the panel judges whose verdict on it is missing."""
    names = [judge_name(*judges[j]) for j in panel if verdicts[j].parsed is None]
    errors = "; ".join(verdicts[j].error for j in panel if verdicts[j].error)
    who = ", ".join(names) or "no judge"
    return f"missing_judge: no verdict from {who}, and its rivals are averaged over them" + (
        f" ({errors})" if errors else ""
    )


def rationale_text(rationales: dict[str, str]) -> str:
    return "\n".join(f"{key}: {text}" for key, text in rationales.items() if text)


def judges_label(judges: list[Judge]) -> str:
    return ",".join(judge_name(agent, client) for agent, client in judges)


class JudgePanel:
    """What the pointwise and pairwise judges share: the judges, criteria, asks per verdict, whether
    verdicts are read from log-probabilities (`weighted`) and whether a rationale comes first."""

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


class PointwiseJudge(JudgePanel):
    kind = "pointwise"

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        convo = conversation_of(prompt.messages)
        asked = (rate(self.judges, convo, c.text, self.criteria, self.max_attempts, self.weighted, self.rationales)
                 for c in candidates)  # fmt: skip
        verdicts = list(await asyncio.gather(*asked))
        panel, scored = panel_of(verdicts)
        return [self._one(v, panel, k in scored) for k, v in enumerate(verdicts)]

    def _one(self, verdicts: list[Verdict], panel: list[int], scored: bool) -> Score:
        records = judge_records(self.judges, verdicts)
        details = ScoreDetail(criteria=[c.key for c in self.criteria], judges=records, usage=usage(verdicts))
        if len(panel) < len(self.judges):
            details.panel = [records[j].judge for j in panel]
        rated = [records[j] for j in panel]
        if not scored:
            missing = any(v.parsed is not None for v in verdicts) and len(self.judges) > 1
            error = missing_judges(self.judges, verdicts, panel) if missing else ""
            details.error = error or "; ".join(v.error for v in verdicts if v.error)
            details.left_out = "missing_judge" if missing else None
            return Score(None, "", details)
        keys = [c.key for c in self.criteria]
        details.ratings = {k: statistics.fmean(_rated(r)[k] for r in rated) for k in keys}
        hard = [r.hard_overall for r in rated if r.hard_overall is not None]
        if len(hard) == len(rated):  # what the sampled digits alone give, beside the weighted score
            details.hard_score = statistics.fmean(hard)
        why = "\n\n".join(f"[{r.judge}]\n{rationale_text(r.rationales or {})}" for r in rated)
        return Score(statistics.fmean(r.overall or 0.0 for r in rated), why, details)


# ---------------------------------------------------------------- pairwise

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
        template, schema = (jp.PAIRWISE, jp.PAIRWISE_SCHEMA) if self.rationales else \
            (jp.PAIRWISE_VERDICT_ONLY, jp.PAIRWISE_VERDICT_SCHEMA)  # fmt: skip
        return await ask_parsed(
            client,
            agent,
            jp.pairwise_messages(convo, first, second, self.criteria, self.rationales),
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
        asked = {k: v for k, v in verdict.record("").to_json().items() if k != "judge"}
        record = {"picked": picked, "fallback": verdict.parsed is None, **asked, "usage": usage([verdict]).to_json()}
        return [jp.criterion_of(n) for n in picked], record

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        convo = conversation_of(prompt.messages)
        criteria, selection = await self.select_criteria(convo)
        verdicts = list(
            await asyncio.gather(*(rate(self.judges, convo, c.text, criteria, self.max_attempts) for c in candidates))
        )
        panel, scored = panel_of(verdicts)  # the aggregator reads the same judges' verdicts on every candidate
        scores = list(
            await asyncio.gather(
                *(self._one(convo, c, criteria, verdicts[k], panel, k in scored) for k, c in enumerate(candidates))
            )
        )
        if selection and scores:
            scores[0].details.criteria_selection = selection
        return scores

    async def _one(
        self,
        convo: list[Message],
        candidate: Candidate,
        criteria: list[jp.Criterion],
        verdicts: list[Verdict],
        panel: list[int],
        scored: bool,
    ) -> Score:
        records = judge_records(self.judges, verdicts)
        details = ScoreDetail(criteria=[c.key for c in criteria], judges=records)
        if len(panel) < len(self.judges):
            details.panel = [records[j].judge for j in panel]
        shown = [jp.render_verdict(*verdicts[j].parsed, criteria) for j in panel if verdicts[j].parsed is not None]
        if not scored or not shown:
            details.usage = usage(verdicts)
            if any(v.parsed is not None for v in verdicts) and len(self.judges) > 1:
                details.error, details.left_out = missing_judges(self.judges, verdicts, panel), "missing_judge"
            else:
                details.error = "no judge gave a verdict"
            return Score(None, "", details)
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
        details.usage = usage([*verdicts, final])
        details.aggregator = final.record(judge_name(agent, client))
        if final.parsed is None:
            details.error = final.error
            return Score(None, "", details)
        ratings, rationales = final.parsed
        details.ratings, details.rationales = ratings, rationales
        return Score(overall(ratings), rationale_text(rationales), details)
