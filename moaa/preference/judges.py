"""LLM judges behind the Scorer interface: the pointwise rubric, the MoA judge, and what every judge shares.

- PointwiseJudge (UltraFeedback): every judge rates each candidate on the criteria (the four
  UltraFeedback aspects unless `scorer.criteria` names others), 1-5; a judge's overall is the mean
  of its ratings and the candidate's score the mean over the prompt's panel (`common_panel`): every
  scored candidate is averaged over the same judges, never over whichever answered.
- MoAJudge (MoAA, ALGORITHMS.md section 2): one call picks the `num_criteria` most relevant
  criteria of the list (by default moaa's MoAA list, prompts.criteria.MOAA_CRITERIA; none when the
  list is no longer than num_criteria); the judges rate each candidate pointwise; the aggregator reads their verdicts
  (numbered from 1) and gives the final ratings, whose mean is the score. The paper reports (no
  code) that its MoA judge also compares pairs in both orders; here pointwise verdicts keep the
  cost at (judges + 1) x K calls, and `kind: pairwise` is the both-orders judge
  (moaa.preference.pairwise_judge.PairwiseJudge, which shares JudgePanel, judge_name and the
  log-probability width from here).
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
from moaa.preference.score_details import JudgeRecord, ScoreDetail
from moaa.preference.scoring import Score, Verdict, ask_parsed, usage
from moaa.preference.verdicts import parse_criteria, parse_ratings, ratings_problem, weighted_ratings
from moaa.prompts.criteria import ASPECTS, Criterion, criterion_of
from moaa.prompts.judging import (
    CRITERIA_SCHEMA,
    MOA_AGGREGATE,
    POINTWISE,
    POINTWISE_RATINGS_ONLY,
    SELECT_CRITERIA,
    aggregate_messages,
    criteria_messages,
    pointwise_messages,
    render_verdict,
    verdict_schema,
)
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
    criteria: list[Criterion],
    max_attempts: int,
    weighted: bool = False,
    rationales: bool = True,
) -> list[Verdict]:
    """Every judge's pointwise verdict on one answer (parsed = (ratings, rationales) or None).

    `weighted`: each rating becomes its probability-weighted mean over 1-5 (verdicts.weighted_ratings)
    where the endpoint returns log-probabilities; otherwise it stays the digit the judge wrote.
    """
    messages = pointwise_messages(convo, text, criteria, rationales)
    schema = verdict_schema(criteria, rationales)
    verdicts = list(
        await asyncio.gather(
            *(
                ask_parsed(
                    client,
                    agent,
                    messages,
                    lambda t: parse_ratings(t, criteria),
                    tag=(POINTWISE if rationales else POINTWISE_RATINGS_ONLY).tag("pref", "judge"),
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


def weigh(verdict: Verdict, criteria: list[Criterion]) -> None:
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
        criteria: list[Criterion],
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

    async def select_criteria(self, convo: list[Message]) -> tuple[list[Criterion], dict[str, Any]]:
        """The criteria for this prompt: all when few enough, else the aggregator's pick (first N on failure)."""
        names = self.criteria_names
        if not names:
            return list(ASPECTS), {}
        if len(names) <= self.num_criteria:
            return [criterion_of(n) for n in names], {}
        agent, client = self.aggregator
        verdict = await ask_parsed(
            client,
            agent,
            criteria_messages(convo, names, self.num_criteria),
            lambda t: parse_criteria(t, names, self.num_criteria),
            tag=SELECT_CRITERIA.tag("pref", "aggregator"),
            response_format=json_format(client, "criteria", CRITERIA_SCHEMA),
            max_attempts=self.max_attempts,
            explain=lambda t: "it named none of the listed criteria",
        )
        picked = verdict.parsed or names[: self.num_criteria]
        asked = {k: v for k, v in verdict.record("").to_json().items() if k != "judge"}
        record = {"picked": picked, "fallback": verdict.parsed is None, **asked, "usage": usage([verdict]).to_json()}
        return [criterion_of(n) for n in picked], record

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
        criteria: list[Criterion],
        verdicts: list[Verdict],
        panel: list[int],
        scored: bool,
    ) -> Score:
        records = judge_records(self.judges, verdicts)
        details = ScoreDetail(criteria=[c.key for c in criteria], judges=records)
        if len(panel) < len(self.judges):
            details.panel = [records[j].judge for j in panel]
        shown = [render_verdict(*verdicts[j].parsed, criteria) for j in panel if verdicts[j].parsed is not None]
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
            aggregate_messages(convo, candidate.text, shown, criteria),
            lambda t: parse_ratings(t, criteria),
            tag=MOA_AGGREGATE.tag("pref", "aggregator"),
            response_format=json_format(client, "verdict", verdict_schema(criteria)),
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
