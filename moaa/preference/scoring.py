"""What every scorer shares: the Score type, the Scorer interface, and a judge call that re-asks.

A scorer turns a prompt's candidates into one Score each (`score` None = unscored). Its details
(moaa.preference.score_details.ScoreDetail) hold what the trace keeps: per-criterion ratings and
rationales, every raw judge answer, attempts, pairwise outcomes and the calls' token usage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from moaa.config import AgentConfig, Sampling
from moaa.models.agent_calls import sampling_for
from moaa.models.client import CallError, ChatClient, Message
from moaa.preference.candidates import Candidate
from moaa.preference.score_details import JudgeRecord, ScoreDetail, Usage
from moaa.prompts.judging import reask_messages
from moaa.rows import Prompt

log = logging.getLogger(__name__)


@dataclass
class Score:
    """A candidate's score (None when the scorer could not rate it), why, and the raw material."""

    score: float | None
    rationale: str = ""
    details: ScoreDetail = field(default_factory=ScoreDetail)


class Scorer(Protocol):
    kind: str

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]: ...


@dataclass
class Verdict:
    """One judge question, asked up to `max_attempts` times until its answer parses."""

    parsed: Any | None
    raw: list[str] = field(default_factory=list)
    attempts: int = 0
    error: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None  # of the answer that parsed, when asked for
    weighted: bool = False  # its ratings are probability-weighted means (judges.weigh)
    hard: dict[str, float] | None = None  # the digits it wrote, before weighting (weighted verdicts only)

    @property
    def unparsed(self) -> int:
        """Answers that came back but could not be read."""
        return len(self.raw) - (1 if self.parsed is not None else 0)

    def record(self, judge: str) -> JudgeRecord:
        """What the trace keeps of it: the judge's name, model, attempts, raw answers (and error)."""
        return JudgeRecord(judge, self.model, self.attempts, self.raw, self.weighted, self.hard, self.error)


def judge_sampling(agent: AgentConfig, attempt: int, top_logprobs: int | None = None) -> Sampling:
    """The judge's sampling at temperature 0; the seed moves per attempt (servers that sample honour it)."""
    logprobs = {"top_logprobs": top_logprobs} if top_logprobs else {}
    return sampling_for(agent, (agent.seed or 0) + attempt, temperature=0.0, **logprobs)


async def ask_parsed(
    client: ChatClient,
    agent: AgentConfig,
    messages: list[Message],
    parse: Callable[[str], Any | None],
    *,
    tag: str,
    response_format: dict[str, Any] | None,
    max_attempts: int,
    top_logprobs: int | None = None,
    explain: Callable[[str], str] | None = None,
) -> Verdict:
    """Ask until `parse` reads the answer; a failed call (retries already spent) ends it unparsed.

    A re-ask is not the same request again (at temperature 0 a judge would repeat itself): it
    carries the failed answer and what was wrong with it (`explain(text)`, else a generic line).
    """
    verdict = Verdict(None, model=client.model)
    asked = messages
    for attempt in range(max_attempts):
        verdict.attempts = attempt + 1
        if verdict.raw:
            problem = explain(verdict.raw[-1]) if explain else "it was not in the format asked for"
            asked = reask_messages(messages, verdict.raw[-1], problem)
        try:
            sampling = judge_sampling(agent, attempt, top_logprobs)
            done = await client.chat(asked, sampling, response_format=response_format, tag=tag)
        except CallError as exc:
            verdict.error = str(exc)
            return verdict
        verdict.model = done.model
        verdict.prompt_tokens += done.prompt_tokens
        verdict.completion_tokens += done.completion_tokens
        verdict.raw.append(done.text)
        parsed = parse(done.text)
        if parsed is not None:
            verdict.parsed, verdict.logprobs = parsed, done.logprobs
            return verdict
        log.debug("unparsable verdict from %s (attempt %d): %.200r", client.name, attempt + 1, done.text)
    verdict.error = f"no parsable verdict in {max_attempts} attempt(s)"
    return verdict


def usage(verdicts: list[Verdict]) -> Usage:
    return Usage(
        calls=sum(len(v.raw) + (1 if v.error and v.attempts > len(v.raw) else 0) for v in verdicts),
        prompt_tokens=sum(v.prompt_tokens for v in verdicts),
        completion_tokens=sum(v.completion_tokens for v in verdicts),
        unparsed=sum(v.unparsed for v in verdicts),
    )
