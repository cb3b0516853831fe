"""A prompt's candidate pool: every agent's samples (and the mixture's SFT answer), merged; who may pair.

The agents of `preference.pool()` are asked at once, each with its own seed key, so a re-run asks
the same questions and the request cache answers them; when one agent's call fails the others are
still awaited (their answers land in the cache) before the prompt fails, naming that agent. Texts
that two agents both wrote become one candidate, credited to the first (the others in `also`), so
chosen and rejected never share a text. `Sides` is the pairing rule (moaa.config.pools) as the set
of (chosen, rejected) candidate pairs it allows: every pair (best_worst), pairs holding one answer
of the named agent (one_side_from), or a stronger agent's answer over a weaker's (delta).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from moaa.config import MIXTURE, AnswersConfig, PairingConfig, PoolMember
from moaa.models.agent_calls import client_for
from moaa.models.client import CallError, ChatClient, Message
from moaa.preference.candidates import Candidate, CandidateSet, normalise, sample_candidates


@dataclass(frozen=True)
class SFTAnswer:
    """The mixture's answer to a prompt, as this run's SFT row holds it (include_sft_answer)."""

    text: str
    model: str  # the SFT row's models, served names joined with "+" (the aggregator's last)


class PoolCallError(CallError):
    """An agent of the pool failed for good; the message names it."""

    def __init__(self, member: PoolMember, exc: CallError):
        assert member.agent is not None
        super().__init__(exc.kind, f"{member.label} ({member.path}, endpoint {member.agent.endpoint}): {exc}")


@dataclass
class PooledSet(CandidateSet):
    """The merged candidates of every agent; `parts`: each agent's own set (its cut samples, usage)."""

    parts: list[CandidateSet] = field(default_factory=list)


async def sample_pool(
    conversation: list[Message],
    prompt_id: str,
    members: list[PoolMember],
    clients: dict[str, ChatClient],
    answers: AnswersConfig | None,
    sft_answer: SFTAnswer | None = None,
) -> PooledSet:
    """Every asked agent's answers, merged in pool order, then the mixture's (when given)."""
    asked = [m for m in members if m.agent is not None]

    async def ask(m: PoolMember) -> CandidateSet:
        assert m.agent is not None
        client = client_for(m.agent, clients, f"preference.{m.path}")
        return await sample_candidates(
            conversation, prompt_id, m.agent, client, m.samples, answers, label=m.label, seed_key=m.seed_key
        )

    got = await asyncio.gather(*(ask(m) for m in asked), return_exceptions=True)
    for part in got:
        if isinstance(part, BaseException) and not isinstance(part, CallError):
            raise part  # EndpointError, ConfigError, cancellation: they stop the run
    for m, part in zip(asked, got, strict=True):
        if isinstance(part, CallError):
            raise part if len(asked) == 1 else PoolCallError(m, part)
    parts = [p for p in got if isinstance(p, CandidateSet)]
    return merge(parts, sft_answer)


def merge(parts: list[CandidateSet], sft_answer: SFTAnswer | None = None) -> PooledSet:
    """One set of distinct candidates over `parts` (their counters summed) and the mixture's answer."""
    out = PooledSet([], 0, 0, 0, parts=parts)
    by_text: dict[str, Candidate] = {}
    extra = [] if sft_answer is None else [_mixture(sft_answer)]
    for c in [c for p in parts for c in p.candidates] + extra:
        key = normalise(c.text)
        if key in by_text:
            first = by_text[key]
            out.duplicates += 1
            first.count += c.count
            if not first.written_by(c.agent):
                first.also.append(c.agent)
            continue
        c.index = len(by_text)
        by_text[key] = c
    out.candidates = list(by_text.values())
    for p in parts:
        out.sampled += p.sampled
        out.empty += p.empty
        out.duplicates += p.duplicates
        for key in ("prompt_tokens", "completion_tokens", "truncated_dropped", "truncated_kept", "truncated_reasked"):
            setattr(out, key, getattr(out, key) + getattr(p, key))
        out.content_filtered += p.content_filtered
    out.latency_s = max((p.latency_s for p in parts), default=0.0)
    out.cached = bool(parts) and all(p.cached for p in parts)
    out.model = parts[0].model if parts else ""
    out.agent = parts[0].agent if parts else MIXTURE
    return out


def _mixture(answer: SFTAnswer) -> Candidate:
    # The SFT row's text as it is (its pairs hold the row's exact text), never re-stripped.
    return Candidate(0, answer.text, answer.model, agent=MIXTURE, samples=[0])


@dataclass(frozen=True)
class Sides:
    """The (chosen, rejected) candidate pairs a pairing rule allows; `directional`: only one order
    (delta), so a scorer that orders the pair the other way drops it (reason `reversed`)."""

    up: frozenset[int]
    down: frozenset[int]
    directional: bool

    def allows(self, chosen: int, rejected: int) -> bool:
        if chosen == rejected:
            return False
        if chosen in self.up and rejected in self.down:
            return True
        return not self.directional and chosen in self.down and rejected in self.up


def sides_of(pairing: PairingConfig, candidates: list[Candidate]) -> Sides | None:
    """The pairs `pairing` allows among `candidates` (None: every pair, best vs worst)."""
    if pairing.delta is not None:
        up, down, directional = pairing.delta.stronger, pairing.delta.weaker, True
    elif pairing.one_side_from is not None:
        up, down, directional = pairing.one_side_from, None, False
    else:
        return None
    ups = frozenset(c.index for c in candidates if c.written_by(up))
    if down is None:  # the other side: any answer another agent wrote
        downs = frozenset(c.index for c in candidates if c.agent != up or c.also)
    else:
        downs = frozenset(c.index for c in candidates if c.written_by(down))
    return Sides(ups, downs, directional)
