"""The trace steps one prompt of the preference stage leaves: a "sample" step per distinct candidate
(its pick, its score, the agents that wrote the same text), an unselected "sample" step per answer
dropped for being cut at max_tokens, and a "verdict" step per scored candidate (its rationale and the
scorer's details as JSON). moaa.preference.stage adds them to each prompt's result.
"""

from __future__ import annotations

import json

from moaa.config import MIXTURE
from moaa.preference.candidates import Candidate, CandidateSet
from moaa.preference.pairs import PairChoice
from moaa.preference.pool import PooledSet
from moaa.preference.score_details import Usage
from moaa.preference.scoring import Score, Scorer
from moaa.rows import Prompt, TraceStep

STAGE = "preference"  # the stage column of its trace steps, failures and call counts


def sample_steps(prompt: Prompt, got: CandidateSet, values: list, choice: PairChoice) -> list[TraceStep]:
    """One "sample" step per distinct candidate: its score (`values`, None past their end) and its pick."""
    picks = {choice.chosen: "chosen", choice.rejected: "rejected"}
    steps = []
    for c, value in zip(got.candidates, values + [None] * (len(got.candidates) - len(values)), strict=True):
        meta = {"count": c.count, "samples": c.samples} | ({"pick": picks[c.index]} if c.index in picks else {})
        if c.reasoning:
            meta["reasoning"] = c.reasoning
        if c.also:  # the same text from other agents of the pool
            meta["also"] = c.also
        steps.append(
            TraceStep(
                prompt_id=prompt.prompt_id,
                stage=STAGE,
                kind="sample",
                text=c.text,
                agent=c.agent,
                model=c.model,
                role="mixture" if c.agent == MIXTURE else "policy",
                index=c.index,
                selected=c.index in picks,
                prompt_tokens=_prompt_tokens(got, c),
                completion_tokens=c.completion_tokens,
                latency_s=got.latency_s,
                finish_reason=c.finish_reason,
                cached=got.cached,
                score=value,
                meta=json.dumps(meta),
            )
        )
    return steps


def _prompt_tokens(got: CandidateSet, c: Candidate) -> int:
    """A call's prompt tokens, on the first candidate of the agent that made it (0 for the others)."""
    parts = got.parts if isinstance(got, PooledSet) else [got]
    part = next((p for p in parts if p.agent == c.agent), None)
    return part.prompt_tokens if part is not None and part.candidates and part.candidates[0] is c else 0


def cut_steps(prompt: Prompt, pooled: PooledSet) -> list[TraceStep]:
    """One unselected "sample" step per sample dropped for being cut at max_tokens (the audit trail)."""
    return [step for got in pooled.parts for step in _cut_part(prompt, got)]


def _cut_part(prompt: Prompt, got: CandidateSet) -> list[TraceStep]:
    """The cut-sample steps of one agent's samples."""
    return [
        TraceStep(
            prompt_id=prompt.prompt_id,
            stage=STAGE,
            kind="sample",
            text=text,
            agent=got.agent,
            model=got.model,
            role="policy",
            index=i,
            selected=False,
            finish_reason="length",
            cached=got.cached,
            meta=json.dumps({"samples": [i], "dropped": "truncated"}),
        )  # fmt: skip
        for i, text in got.cut
    ]


def verdict_steps(prompt: Prompt, scorer: Scorer, scores: list[Score]) -> list[TraceStep]:
    """One "verdict" step per candidate the scorer scored: its rationale, score and details (meta)."""
    steps = []
    for index, s in enumerate(scores):
        spent = s.details.usage or Usage()
        steps.append(
            TraceStep(
                prompt_id=prompt.prompt_id,
                stage=STAGE,
                kind="verdict",
                text=s.rationale,
                agent=scorer.kind,
                model=getattr(scorer, "label", scorer.kind),
                role="judge",
                index=index,
                selected=s.score is not None,
                prompt_tokens=spent.prompt_tokens,
                completion_tokens=spent.completion_tokens,
                score=s.score,
                meta=json.dumps(s.details.to_json(), ensure_ascii=False, default=str),
            )
        )
    return steps
