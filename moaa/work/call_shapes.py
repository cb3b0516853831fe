"""What each dry-run call sends and answers, in tokens: the per-call message shapes of the SFT method's
plan and of the preference stage, built with the real prompt builders over an empty prompt.

    from moaa.work.call_shapes import sft_shapes, tokens_of
    shapes = sft_shapes(config, plan)        # {agent label: [(calls per turn, messages of one call)]}

Input is counted at CHARS_PER_TOKEN characters per token plus MESSAGE_TOKENS per message; an answer,
and every reference an aggregator or judge reads, is OUTPUT_FRACTION of the agent's max_tokens
(DEFAULT_MAX_TOKENS when neither the agent nor its endpoint sets one). moaa.work.estimate adds these
up over a run's prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moaa.config import AgentConfig, EndpointConfig, MoaaConfig, PreferenceConfig
from moaa.rows import Message

if TYPE_CHECKING:
    from moaa.engine.plan import Plan

CHARS_PER_TOKEN = 4
MESSAGE_TOKENS = 4  # chat-template tokens around each message
OUTPUT_FRACTION = 0.6  # answers are assumed to use 60% of max_tokens
DEFAULT_MAX_TOKENS = 1024  # assumed when neither the agent nor its endpoint sets max_tokens
PROBE: list[Message] = [{"role": "user", "content": ""}]

Shape = tuple[int, list[Message]]  # (calls per turn, the messages of one such call for an empty prompt)


def tokens_of(messages: list[Message]) -> float:
    """Estimated input tokens of these messages: their text at CHARS_PER_TOKEN, plus MESSAGE_TOKENS each."""
    return sum(len(m.get("content") or "") for m in messages) / CHARS_PER_TOKEN + MESSAGE_TOKENS * len(messages)


def output_tokens(agent: AgentConfig, endpoint: EndpointConfig) -> float:
    """Assumed completion tokens of one answer: OUTPUT_FRACTION of the effective max_tokens."""
    limit = agent.max_tokens or endpoint.sampling.max_tokens or DEFAULT_MAX_TOKENS
    return OUTPUT_FRACTION * limit


def placeholder(tokens: float, char: str = "x") -> str:
    """A stand-in text of about `tokens` tokens (an answer or reference not yet written)."""
    return char * int(tokens * CHARS_PER_TOKEN)


def turn_sizes(messages: list[Message]) -> list[float]:
    """Per answered turn, the conversation tokens the engine sends (earlier answers excluded)."""
    sizes, convo, size = [], None, 0.0
    for m in messages:
        role = m.get("role")
        if role == "assistant":
            if convo == "user":
                sizes.append(size)
                convo = "assistant"  # the engine's answer; a second assistant turn is dropped
            continue
        size += tokens_of([m])
        convo = role
    if convo == "user":
        sizes.append(size)
    return sizes


def shape_overhead(shapes: list[Shape]) -> tuple[int, float]:
    """(calls per turn, extra tokens per turn) of a label's shapes, beyond the conversation itself."""
    calls = sum(count for count, _ in shapes)
    extra = sum(count * (tokens_of(messages) - tokens_of(PROBE)) for count, messages in shapes)
    return calls, extra


def sft_shapes(config: MoaaConfig, plan: Plan) -> dict[str, list[Shape]]:
    """For each agent label of the method's plan, its calls of one turn and what each one sends.

    Each step's own message builder makes the messages, with placeholder references: an earlier
    answer as long as the proposers' mean answer, a running synthesis as long as the step agent's."""
    eps = config.endpoints
    props = config.sft.proposers
    ref = placeholder(sum(output_tokens(p, eps[p.endpoint]) for p in props) / len(props))
    shapes: dict[str, list[Shape]] = {}
    for step in plan.steps:
        synth = placeholder(output_tokens(step.agent, eps[step.agent.endpoint]), "y")  # told apart from `ref`
        messages = step.build(PROBE, [synth] * step.syntheses + [ref] * step.references)
        shapes.setdefault(step.label, []).append((step.calls, messages))
    return shapes


def preference_shapes(config: MoaaConfig) -> dict[str, list[Shape]]:
    """For each agent label of the preference calls_per_prompt, the calls per prompt and their messages."""
    from moaa.preference.stage import criteria_names
    from moaa.prompts.criteria import ASPECTS, criterion_of
    from moaa.prompts.generation import proposer_messages
    from moaa.prompts.judging import aggregate_messages, criteria_messages, pairwise_messages, pointwise_messages

    pref, eps = config.preference, config.endpoints
    cfg, k = pref.scorer, pref.pool_size()
    shapes: dict[str, list[Shape]] = {}
    asked = [m for m in pref.pool() if m.agent is not None]
    for m in asked:
        assert m.agent is not None
        shapes[m.path] = [(1, proposer_messages(PROBE, m.agent.role, None))]
    if asked:  # a candidate as long as the pool's answers are on average
        lengths = [output_tokens(m.agent, eps[m.agent.endpoint]) * m.samples for m in asked if m.agent is not None]
        cand = placeholder(sum(lengths) / sum(m.samples for m in asked))
    else:
        cand = ""
    kind = cfg.judged_kind()  # a verifier's tie-breaker
    listed = criteria_names(cfg)
    names = listed[: cfg.num_criteria] if kind == "moa_judge" and listed else listed
    criteria = [criterion_of(n) for n in names] if names else list(ASPECTS)
    for i in range(len(cfg.judges)):
        if kind == "pairwise":
            asked = pairwise_messages(PROBE, cand, cand, criteria, cfg.rationales)
            shapes[f"scorer.judges[{i}]"] = [(k * (k - 1), asked)]
        else:
            shapes[f"scorer.judges[{i}]"] = [(k, pointwise_messages(PROBE, cand, criteria, cfg.rationales))]
        if pref.pair_audit:  # the written pair, both orders, a verdict without a rationale
            shapes[f"pair_audit.judges[{i}]"] = [(2, pairwise_messages(PROBE, cand, cand, criteria, False))]
    if cfg.aggregator is not None and cfg.judges:
        verdict = placeholder(sum(output_tokens(j, eps[j.endpoint]) for j in cfg.judges) / len(cfg.judges))
        shapes["scorer.aggregator"] = [(k, aggregate_messages(PROBE, cand, [verdict] * len(cfg.judges), criteria))]
        if listed and len(listed) > cfg.num_criteria:
            shapes["scorer.aggregator"].append((1, criteria_messages(PROBE, listed, cfg.num_criteria)))
    return shapes


def preference_agent(pref: PreferenceConfig, label: str) -> AgentConfig:
    """The agent behind one of the preference stage's call labels (`scorer.judges[0]`, `policy`, ...)."""
    for judges in ("scorer.judges[", "pair_audit.judges["):  # the audit asks the scorer's judges
        if label.startswith(judges):
            return pref.scorer.judges[int(label[len(judges) : -1])]
    if label.startswith("candidates["):
        assert pref.candidates is not None
        return pref.candidates[int(label[len("candidates[") : -1])]
    agent = pref.policy if label == "policy" else pref.scorer.aggregator
    assert agent is not None
    return agent
