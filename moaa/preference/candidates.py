"""Candidate answers for the preference stage: an agent of the pool samples K answers to each prompt.

One `n=K` call at the policy's temperature (the client falls back to K seeded calls where a
server ignores n); the seed is derived from the prompt id and the agent's seed key, so a re-run
asks the same question and the request cache answers it (moaa.preference.pool merges the agents').
Empty answers are dropped and identical ones (whitespace-normalised) collapsed into one candidate
with a count, so chosen and rejected never share a text.
Answers cut at max_tokens follow `answers.truncated` (moaa.config.AnswersConfig): dropped, asked
again with a larger budget, or kept; answers a content filter stopped are always dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from moaa.config import AgentConfig, AnswersConfig, Sampling
from moaa.models.agent_calls import derive_seed, larger_budget, sampling_for, split_tokens
from moaa.models.client import ChatClient, Completion, Message
from moaa.prompts.generation import proposer_messages

log = logging.getLogger(__name__)

SAMPLE_TAG = "pref.policy.sample@v1"


@dataclass
class Candidate:
    """One distinct answer: its position among the candidates, text, model, the agent that wrote it
    (its pool label; `also`: other agents that wrote the same text) and sample statistics."""

    index: int
    text: str
    model: str
    count: int = 1  # how many samples had this (normalised) text
    samples: list[int] = field(default_factory=list)  # which of the K samples they were
    finish_reason: str = "stop"
    completion_tokens: int = 0
    reasoning: str = ""  # a reasoning model's thinking, split off the text (kept for the trace only)
    agent: str = "policy"
    also: list[str] = field(default_factory=list)

    def written_by(self, label: str) -> bool:
        return self.agent == label or label in self.also


@dataclass
class CandidateSet:
    candidates: list[Candidate]
    sampled: int  # texts returned
    empty: int  # dropped: blank text
    duplicates: int  # collapsed into an earlier identical text
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    truncated_dropped: int = 0  # samples cut at max_tokens and dropped
    truncated_kept: int = 0  # samples cut at max_tokens and kept (answers.truncated: keep)
    truncated_reasked: int = 0  # n=K calls asked again with a larger budget
    content_filtered: int = 0
    cut: list[tuple[int, str]] = field(default_factory=list)  # (sample, text) of dropped cut samples
    model: str = ""
    agent: str = "policy"  # the pool label of the agent that sampled them (merged sets: the first)


def normalise(text: str) -> str:
    """The text compared for identity: whitespace runs collapsed, ends stripped."""
    return " ".join(text.split())


def conversation_of(messages: list[Message]) -> list[Message]:
    """The prompt a candidate answers: the conversation without trailing assistant turns."""
    end = len(messages)
    while end and messages[end - 1]["role"] == "assistant":
        end -= 1
    return [dict(m) for m in messages[:end]]


def policy_sampling(policy: AgentConfig, prompt_id: str, seed_key: str = "pref.policy") -> Sampling:
    """The agent's sampling with a seed from the prompt id and `seed_key` (offset by the configured seed):
    two agents of one pool on the same model and temperature still ask different questions."""
    return sampling_for(policy, derive_seed(prompt_id, seed_key, policy.seed or 0))


def collapse(
    texts: list[str], finish_reasons: list[str], model: str, completion_tokens: int = 0, skip: set[int] = frozenset()
) -> CandidateSet:
    """Distinct non-empty texts in first-seen order, with counts (completion tokens shared by length:
    moaa.models.agent_calls.split_tokens); samples in `skip` (cut or filtered answers) are left out."""
    by_text: dict[str, Candidate] = {}
    empty = duplicates = 0
    shares = split_tokens(completion_tokens, texts)
    for i, (text, reason, tokens) in enumerate(zip(texts, finish_reasons, shares, strict=True)):
        if i in skip:
            continue
        key = normalise(text)
        if not key:
            empty += 1
            continue
        if key in by_text:
            duplicates += 1
            by_text[key].count += 1
            by_text[key].samples.append(i)
            continue
        by_text[key] = Candidate(len(by_text), text.strip(), model, 1, [i], reason, tokens)
    return CandidateSet(list(by_text.values()), len(texts), empty, duplicates)


async def sample_candidates(
    conversation: list[Message],
    prompt_id: str,
    policy: AgentConfig,
    client: ChatClient,
    k: int,
    answers: AnswersConfig | None = None,
    *,
    label: str = "policy",
    seed_key: str = "pref.policy",
) -> CandidateSet:
    """K answers of the agent `label` to `conversation`, collapsed. Raises CallError when the call fails.

    reask: while some of the K answers were cut, the n=K call is asked again with twice the budget
    (up to answers.reask_max_tokens); answers still cut are then dropped as under `drop`."""
    answers = answers or AnswersConfig()
    messages = proposer_messages(conversation, policy.role, None)
    sampling, reasked = policy_sampling(policy, prompt_id, seed_key), 0
    while True:
        done: Completion = await client.chat(messages, sampling, n=k, tag=SAMPLE_TAG)
        cut = [i for i, r in enumerate(done.finish_reasons) if r == "length"]
        longest = max((len(done.texts[i]) // 4 for i in cut), default=0)
        bigger = larger_budget(client, sampling, longest, answers.reask_max_tokens) if cut else None
        if answers.truncated != "reask" or bigger is None:
            break
        reasked += 1
        sampling = sampling.model_copy(update={"max_tokens": bigger})
    filtered = {i for i, r in enumerate(done.finish_reasons) if r == "content_filter"}
    dropped = set() if answers.truncated == "keep" else set(cut)
    got = collapse(done.texts, done.finish_reasons, done.model, done.completion_tokens, filtered | dropped)
    got.truncated_dropped, got.truncated_kept = len(dropped), len(cut) - len(dropped)
    got.truncated_reasked, got.content_filtered = reasked, len(filtered)
    got.cut, got.model, got.agent = [(i, done.texts[i]) for i in sorted(dropped)], done.model, label
    for c in got.candidates:
        c.agent = label
    got.prompt_tokens, got.completion_tokens = done.prompt_tokens, done.completion_tokens
    got.latency_s, got.cached = done.latency_s, done.cached
    if done.reasoning:  # the thinking of each candidate's first sample goes to the trace, never to the text
        for c in got.candidates:
            c.reasoning = done.reasoning[c.samples[0]] if c.samples else ""
    if got.empty or got.duplicates:
        log.debug("%s: %d empty and %d duplicate samples dropped", prompt_id, got.empty, got.duplicates)
    return got
