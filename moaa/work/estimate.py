"""Dry run: validate a config and its prompts, then estimate calls, tokens and cost before any model is called.

    from moaa.work.estimate import estimate_run, format_estimate
    print(format_estimate(estimate_run(config)))        # what `moaa run CONFIG --dry-run` prints

Calls come from the stages' own counters (`moaa.engine.calls_per_prompt`, which adds up the
method's call plan, and `moaa.preference.calls_per_prompt`), and what each SFT call sends is built
by the plan's own message builders, so the estimate and the engine never diverge; they are exact
on the path where every call succeeds (SMoA without early stop, every preference candidate
distinct, every verdict parsed first time). Tokens are estimates: input is the text each call
would send, built with the real prompt builders (conversation, role, template, references) at
CHARS_PER_TOKEN characters per token; output, and every reference an aggregator or judge reads,
is OUTPUT_FRACTION of the agent's max_tokens (DEFAULT_MAX_TOKENS when neither the agent nor its
endpoint sets one). No server is started and nothing is sent over the network.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from moaa.config import AgentConfig, EndpointConfig, MoaaConfig, PreferenceConfig
from moaa.config.scales import describe_margin
from moaa.errors import MoaaError
from moaa.rows import Message, Prompt

if TYPE_CHECKING:
    from moaa.engine.plan import Plan
    from moaa.sources import PromptStream

Prompts = Union[list[Prompt], "PromptStream"]  # sized and iterable; a stream is read back from disk

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
MESSAGE_TOKENS = 4  # chat-template tokens around each message
OUTPUT_FRACTION = 0.6  # answers are assumed to use 60% of max_tokens
DEFAULT_MAX_TOKENS = 1024  # assumed when neither the agent nor its endpoint sets max_tokens
_PROBE: list[Message] = [{"role": "user", "content": ""}]

Shape = tuple[int, list[Message]]  # (calls per turn, the messages of one such call for an empty prompt)


def estimate_run(config: MoaaConfig, base_dir: Path | None = None) -> dict[str, Any]:
    """Prompts kept and dropped, then calls/tokens/cost per stage, agent and endpoint.

    Returns {"name", "method", "scorer", "prompts": {"source", "read", "kept", "dropped", "preference"},
    "stages": {stage: {"prompts", "turns", "calls", "per_run_calls", "upper_bound", "input_tokens",
    "output_tokens", "cost", "agents": {label: {"endpoint", "calls", "input_tokens", "output_tokens",
    "cost"}}, "margin" (preference only: min_margin in words)}}, "endpoints": {name: {"model", "priced",
    "calls", "input_tokens", "output_tokens", "cost"}}, "total": {"calls", "input_tokens", "output_tokens",
    "cost", "upper_bound"}, "assumptions": [str]}. Raises ConfigError/InputError on what a real run would fail on.
    """
    from moaa.sources import stream_prompts

    if config.instructions is not None:
        return _estimate_synthesized(config, base_dir or Path.cwd())
    # The stages take len() and one pass over the stream; the sft estimate keeps only turn sizes per prompt.
    with stream_prompts(config.prompts, base_dir=base_dir or Path.cwd()) as prompts:
        if not len(prompts):
            raise MoaaError(f"prompts: no prompts left after filtering (dropped: {prompts.dropped}); relax the filters")
        stages = {"sft": _sft_stage(config, prompts)}
        checked = sum(1 for p in prompts if p.reference is not None)
        pref_prompts = prompts.head(config.preference.limit)
        if config.preference.enabled:
            stages["preference"] = _preference_stage(config, pref_prompts)
    endpoints, total = _totals(config, stages)
    return {
        "name": config.name,
        "method": config.sft.method,
        "scorer": config.preference.scorer.kind if config.preference.enabled else None,
        "prompts": {
            "source": prompts.source,
            "read": prompts.total_read,
            "kept": len(prompts),
            "dropped": {k: v for k, v in prompts.dropped.items() if v},
            "preference": len(pref_prompts) if config.preference.enabled else 0,
        },
        "stages": stages,
        "endpoints": endpoints,
        "total": total,
        "assumptions": _assumptions(config) + _verification_notes(config, checked, len(prompts)),
    }


def _estimate_synthesized(config: MoaaConfig, base_dir: Path) -> dict[str, Any]:
    """estimate_run for a run whose prompts the instruction stage writes: its writers' and answerers'
    calls, then the SFT (and preference) stages over `n` prompts as long as the seed tasks (cycled)."""
    from moaa.instructions.batches import seed_path
    from moaa.instructions.seeds import load_seeds
    from moaa.prompts.instructions import task_prompt

    cfg = config.instructions
    assert cfg is not None
    seeds = load_seeds(seed_path(cfg, base_dir))
    prompts = [
        Prompt.from_messages([{"role": "user", "content": task_prompt(s.instruction, s.input)}], "instructions")
        for s in (seeds * (cfg.n // len(seeds) + 1))[: cfg.n]
    ]
    stages = {"instructions": _instructions_stage(config, seeds), "sft": _sft_stage(config, prompts)}
    pref_prompts = prompts[: config.preference.limit]
    if config.preference.enabled:
        stages["preference"] = _preference_stage(config, pref_prompts)
    endpoints, total = _totals(config, stages)
    kept = len(prompts)
    return {
        "name": config.name,
        "method": config.sft.method,
        "scorer": config.preference.scorer.kind if config.preference.enabled else None,
        "prompts": {
            "source": f"instructions (n={cfg.n}, {len(seeds)} seed tasks)",
            "read": kept,
            "kept": kept,
            "dropped": {},
            "preference": len(pref_prompts) if config.preference.enabled else 0,
        },  # fmt: skip
        "stages": stages,
        "endpoints": endpoints,
        "total": total,
        "assumptions": _assumptions(config)
        + [
            "instructions: every task written passes its filters and the consensus (drops make more rounds, up "
            f"to instructions.max_rounds {cfg.max_rounds}); SFT prompts are sized like the seed tasks"
        ],
    }


def _instructions_stage(config: MoaaConfig, seeds: list[Any]) -> dict[str, Any]:
    """The instruction stage's calls (moaa.instructions.synthesis.planned_calls) with their tokens."""
    from moaa.instructions.batches import answerers_of, writers_of
    from moaa.instructions.synthesis import planned_calls
    from moaa.prompts.instructions import example_block, write_messages

    cfg = config.instructions
    assert cfg is not None
    writers, answerers = writers_of(config), answerers_of(config)
    plan = planned_calls(cfg, len(writers), len(answerers))
    shown = [example_block(s.instruction, s.input or None, s.output) for s in seeds[: cfg.examples]]
    asked = write_messages("with-input", shown, cfg.per_call)
    task = [{"role": "user", "content": _placeholder(sum(tokens_of([{"content": s.instruction + s.input}])
                                                         for s in seeds) / len(seeds))}]  # fmt: skip
    agents = {}
    for i, agent in enumerate(writers):
        calls = plan["rounds"]
        agents[f"instructions.writers[{i}]"] = _load(config, agent, calls, calls, [(1, asked)], 0.0, calls)
    for i, agent in enumerate(answerers):
        calls = plan["tasks"]
        agents[f"instructions.answerers[{i}]"] = _load(config, agent, calls, calls, [(1, task)], 0.0, calls)
    return _stage(plan["tasks"], plan["tasks"], agents, 0, False) | {"rounds": plan["rounds"]}


def _totals(config: MoaaConfig, stages: dict[str, dict]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per endpoint, the run's total) of the stages' estimates."""
    endpoints = _by_endpoint(config, stages)
    total = {key: sum(s[key] for s in stages.values()) for key in ("calls", "input_tokens", "output_tokens", "cost")}
    total["upper_bound"] = any(s["upper_bound"] for s in stages.values())
    total["batch_cost"] = _batch_cost(config, endpoints)
    return endpoints, total


# ---------------------------------------------------------------- tokens


def tokens_of(messages: list[Message]) -> float:
    return sum(len(m.get("content") or "") for m in messages) / CHARS_PER_TOKEN + MESSAGE_TOKENS * len(messages)


def output_tokens(agent: AgentConfig, endpoint: EndpointConfig) -> float:
    """Assumed completion tokens of one answer: OUTPUT_FRACTION of the effective max_tokens."""
    limit = agent.max_tokens or endpoint.sampling.max_tokens or DEFAULT_MAX_TOKENS
    return OUTPUT_FRACTION * limit


def _placeholder(tokens: float, char: str = "x") -> str:
    return char * int(tokens * CHARS_PER_TOKEN)


def _turns(messages: list[Message]) -> list[float]:
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


def _overhead(shapes: list[Shape]) -> tuple[int, float]:
    """(calls per turn, extra tokens per turn) of a label's shapes, beyond the conversation itself."""
    calls = sum(count for count, _ in shapes)
    extra = sum(count * (tokens_of(messages) - tokens_of(_PROBE)) for count, messages in shapes)
    return calls, extra


# ---------------------------------------------------------------- stages


def _sft_stage(config: MoaaConfig, prompts: Prompts) -> dict[str, Any]:
    from moaa.engine.methods import calls_per_prompt, plan_of

    gen, eps = config.sft, config.endpoints
    turns = [_turns(p.messages) for p in prompts]
    by_turns = Counter(len(t) for t in turns)
    counts = {t: calls_per_prompt(gen, turns=t, endpoints=eps) for t in by_turns}
    one = calls_per_prompt(gen, turns=1, endpoints=eps)
    plan = plan_of(gen)
    final = gen.proposers[0] if gen.aggregator is None else gen.aggregator
    answer = output_tokens(final, eps[final.endpoint])
    # A later turn also carries the mixture's earlier answers.
    convo = sum(sum(size + i * (answer + MESSAGE_TOKENS) for i, size in enumerate(t)) for t in turns)
    n_turns = sum(len(t) for t in turns)
    shapes = sft_shapes(config, plan)
    agents = {}
    for label in one["agents"]:
        calls = sum(counts[t]["agents"][label]["calls"] * n for t, n in by_turns.items())
        answers = sum(counts[t]["agents"][label]["answers"] * n for t, n in by_turns.items())
        agent = next(s.agent for s in plan.steps if s.label == label)
        agents[label] = _load(config, agent, calls, answers, shapes[label], convo, n_turns)
    per_run = 0
    for label, calls in one["per_run"].items():
        agent = next(s.agent for s in plan.steps if s.label == label)
        agents[label] = _load(config, agent, calls, calls, shapes[label], calls * tokens_of(_PROBE), calls)
        per_run += calls
    upper = bool(one["upper_bound"])
    return _stage(len(prompts), n_turns, agents, per_run, upper)


def sft_shapes(config: MoaaConfig, plan: Plan) -> dict[str, list[Shape]]:
    """For each agent label of the method's plan, its calls of one turn and what each one sends.

    Each step's own message builder makes the messages, with placeholder references: an earlier
    answer as long as the proposers' mean answer, a running synthesis as long as the step agent's."""
    eps = config.endpoints
    props = config.sft.proposers
    ref = _placeholder(sum(output_tokens(p, eps[p.endpoint]) for p in props) / len(props))
    shapes: dict[str, list[Shape]] = {}
    for step in plan.steps:
        synth = _placeholder(output_tokens(step.agent, eps[step.agent.endpoint]), "y")  # told apart from `ref`
        messages = step.build(_PROBE, [synth] * step.syntheses + [ref] * step.references)
        shapes.setdefault(step.label, []).append((step.calls, messages))
    return shapes


def _preference_stage(config: MoaaConfig, prompts: Prompts) -> dict[str, Any]:
    from moaa.preference import calls_per_prompt
    from moaa.preference.candidates import conversation_of

    pref, eps = config.preference, config.endpoints
    answered = convo = 0  # one pass over the (streamed) prompts
    for prompt in prompts:
        c = conversation_of(prompt.messages)
        if c and c[-1]["role"] == "user":  # the stage fails the others before calling anything
            answered += 1
            convo += tokens_of(c)
    counts = calls_per_prompt(pref, endpoints=eps)
    shapes = preference_shapes(config)
    agents = {}
    for label, info in counts["agents"].items():
        calls, answers = info["calls"] * answered, info["answers"] * answered
        agents[label] = _load(config, _pref_agent(pref, label), calls, answers, shapes[label], convo, answered)
    return _stage(len(prompts), answered, agents, 0, False) | {
        "reward_model_passes": counts["reward_model_passes"] * answered,
        "margin": describe_margin(pref.min_margin, pref.scorer.judged_kind()),
        "pool": describe_pool(pref),
    }


def describe_pool(pref: PreferenceConfig) -> str:
    """The pool and its pairing rule in words: each agent's label, samples and model call."""
    source = pref.include_sft_answer if isinstance(pref.include_sft_answer, str) else "this run"
    members = [
        f"{m.label} x{m.samples} ({m.path})" if m.agent is not None else f"{m.label} ({source}'s SFT answer, no call)"
        for m in pref.pool()
    ]
    return f"{', '.join(members)}; {pref.pairing.describe()}"


def preference_shapes(config: MoaaConfig) -> dict[str, list[Shape]]:
    """For each agent label of the preference calls_per_prompt, the calls per prompt and their messages."""
    from moaa.preference.stage import criteria_names
    from moaa.prompts.generation import proposer_messages
    from moaa.prompts.judging import (
        ASPECTS,
        aggregate_messages,
        criteria_messages,
        criterion_of,
        pairwise_messages,
        pointwise_messages,
    )

    pref, eps = config.preference, config.endpoints
    cfg, k = pref.scorer, pref.pool_size()
    shapes: dict[str, list[Shape]] = {}
    asked = [m for m in pref.pool() if m.agent is not None]
    for m in asked:
        assert m.agent is not None
        shapes[m.path] = [(1, proposer_messages(_PROBE, m.agent.role, None))]
    if asked:  # a candidate as long as the pool's answers are on average
        lengths = [output_tokens(m.agent, eps[m.agent.endpoint]) * m.samples for m in asked if m.agent is not None]
        cand = _placeholder(sum(lengths) / sum(m.samples for m in asked))
    else:
        cand = ""
    kind = cfg.judged_kind()  # a verifier's tie-breaker
    listed = criteria_names(cfg)
    names = listed[: cfg.num_criteria] if kind == "moa_judge" and listed else listed
    criteria = [criterion_of(n) for n in names] if names else list(ASPECTS)
    for i in range(len(cfg.judges)):
        if kind == "pairwise":
            asked = pairwise_messages(_PROBE, cand, cand, criteria, cfg.rationales)
            shapes[f"scorer.judges[{i}]"] = [(k * (k - 1), asked)]
        else:
            shapes[f"scorer.judges[{i}]"] = [(k, pointwise_messages(_PROBE, cand, criteria, cfg.rationales))]
        if pref.pair_audit:  # the written pair, both orders, a verdict without a rationale
            shapes[f"pair_audit.judges[{i}]"] = [(2, pairwise_messages(_PROBE, cand, cand, criteria, False))]
    if cfg.aggregator is not None and cfg.judges:
        verdict = _placeholder(sum(output_tokens(j, eps[j.endpoint]) for j in cfg.judges) / len(cfg.judges))
        shapes["scorer.aggregator"] = [(k, aggregate_messages(_PROBE, cand, [verdict] * len(cfg.judges), criteria))]
        if listed and len(listed) > cfg.num_criteria:
            shapes["scorer.aggregator"].append((1, criteria_messages(_PROBE, listed, cfg.num_criteria)))
    return shapes


def _pref_agent(pref: PreferenceConfig, label: str) -> AgentConfig:
    for judges in ("scorer.judges[", "pair_audit.judges["):  # the audit asks the scorer's judges
        if label.startswith(judges):
            return pref.scorer.judges[int(label[len(judges) : -1])]
    if label.startswith("candidates["):
        assert pref.candidates is not None
        return pref.candidates[int(label[len("candidates[") : -1])]
    agent = pref.policy if label == "policy" else pref.scorer.aggregator
    assert agent is not None
    return agent


def _load(
    config: MoaaConfig, agent: AgentConfig, calls: int, answers: int, shapes: list[Shape], convo: float, turns: int
) -> dict[str, Any]:
    """One agent's calls with their input/output tokens and cost over the whole stage.

    `convo`: conversation tokens summed over the stage's `turns`; each call sends its turn's
    conversation plus what its shape adds (role, template, references).
    """
    from moaa.models.stats import call_cost

    endpoint = config.endpoints[agent.endpoint]
    shape_calls, extra = _overhead(shapes)
    # The engine's count is authoritative; shapes only say what each call sends (a separate-calls
    # fallback for n sends the same messages K times, hence the scaling).
    scale = calls / (shape_calls * turns) if shape_calls and turns else 0.0
    tokens_in = scale * (shape_calls * convo + turns * extra)
    tokens_out = answers * output_tokens(agent, endpoint)
    cost = call_cost(int(tokens_in), int(tokens_out), endpoint.price_input_per_mtok, endpoint.price_output_per_mtok)
    return {
        "endpoint": agent.endpoint,
        "calls": calls,
        "input_tokens": round(tokens_in),
        "output_tokens": round(tokens_out),
        "cost": cost,
    }


def _stage(prompts: int, turns: int, agents: dict[str, dict], per_run: int, upper: bool) -> dict[str, Any]:
    sums = {key: sum(a[key] for a in agents.values()) for key in ("calls", "input_tokens", "output_tokens", "cost")}
    return {
        "prompts": prompts,
        "turns": turns,
        **sums,
        "per_run_calls": per_run,
        "upper_bound": upper,
        "agents": agents,
    }


def _by_endpoint(config: MoaaConfig, stages: dict[str, dict]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for stage in stages.values():
        for agent in stage["agents"].values():
            ep = config.endpoints[agent["endpoint"]]
            row = out.setdefault(
                agent["endpoint"],
                {
                    "model": ep.model,
                    "priced": ep.price_input_per_mtok is not None or ep.price_output_per_mtok is not None,
                    "local": ep.local,
                    "calls": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost": 0.0,
                },
            )
            for key in ("calls", "input_tokens", "output_tokens", "cost"):
                row[key] += agent[key]
    return dict(sorted(out.items()))


def _batch_cost(config: MoaaConfig, endpoints: dict[str, dict[str, Any]]) -> float | None:
    """The total at the batch price of the endpoints in batch mode; None when none is."""
    from moaa.models.batch import batch_enabled

    batching = [n for n in endpoints if batch_enabled(config, n)]
    if not batching:
        return None
    factor = {n: config.endpoints[n].batch.price_factor if n in batching else 1.0 for n in endpoints}
    return sum(row["cost"] * factor[n] for n, row in endpoints.items())


def _verification_notes(config: MoaaConfig, checked: int, kept: int) -> list[str]:
    """What checking answers adds: a re-ask per failing final answer, a verifier's tie-breaker on ties only."""
    notes = []
    if checked and config.sft.verify.mode == "require" and config.sft.verify.reask:
        notes.append(
            f"{checked} of {kept} prompts carry a reference: each final answer that fails its check is asked once "
            "more (sft.verify.reask), at most one call per such prompt, not counted above"
        )
    if config.preference.enabled and config.preference.scorer.kind == "verifier":
        notes.append("the verifier scorer's judges are asked only where verdicts tie: counted above as if always")
    return notes


def _assumptions(config: MoaaConfig) -> list[str]:
    notes = [
        f"input tokens: the text each call sends (conversation, role, template, references) at "
        f"{CHARS_PER_TOKEN} characters per token, plus {MESSAGE_TOKENS} per message",
        f"output tokens: {OUTPUT_FRACTION:.0%} of each agent's max_tokens ({DEFAULT_MAX_TOKENS} when unset); "
        "references read by aggregators and judges are assumed the same length",
        "calls assume every call succeeds on its first try (retries and re-asked verdicts add calls) "
        "and no cached answer (a resumed or repeated run is cheaper)",
    ]
    from moaa.engine.methods import plan_of

    plan = plan_of(config.sft)
    unknown_n = sorted({a.endpoint for _, a in config.agents() if config.endpoints[a.endpoint].supports_n is None})
    if any(step.samples > 1 for step in plan.steps) or config.preference.enabled:
        if unknown_n:
            notes.append(
                f"n>1 sampling counted as one call on {', '.join(unknown_n)} (supports_n unset); "
                "a server that ignores n needs one call per sample"
            )
    if plan.stops_early:
        notes.append(f"{config.sft.method} calls are an upper bound: {plan.stops_early}")
    if config.preference.enabled:
        notes.append("preference calls assume all samples are distinct (duplicates are judged once)")
    unpriced = [
        n
        for n in config.used_endpoints()
        if config.endpoints[n].price_input_per_mtok is None and config.endpoints[n].price_output_per_mtok is None
    ]
    if unpriced:
        notes.append(
            f"no price set for {', '.join(unpriced)}: counted as $0 (set price_input_per_mtok/price_output_per_mtok)"
        )
    return notes


# ---------------------------------------------------------------- text


def format_estimate(est: dict[str, Any]) -> str:
    """The estimate as the plain text `moaa run --dry-run` prints."""
    p = est["prompts"]
    dropped = ", ".join(f"{k} {v}" for k, v in p["dropped"].items()) or "none"
    bound = " (upper bound)" if est["total"]["upper_bound"] else ""
    scorer = f", scorer {est['scorer']}" if est["scorer"] else ""
    lines = [
        f"moaa dry run '{est['name']}': method {est['method']}{scorer} - no model was called",
        f"prompts: {p['source']}: read {p['read']}, kept {p['kept']} (dropped: {dropped})",
    ]
    for name, stage in est["stages"].items():
        per = stage["calls"] / stage["prompts"] if stage["prompts"] else 0.0
        run = f", {stage['per_run_calls']} once per run" if stage["per_run_calls"] else ""
        turns = f", {stage['turns']} turns" if stage["turns"] != stage["prompts"] else ""
        upper = " (upper bound)" if stage["upper_bound"] else ""
        lines += [
            "",
            f"stage {name}: {stage['prompts']} prompts{turns}, {stage['calls']} calls "
            f"({per:.2f} per prompt{run}){upper}",
        ]
        lines += _table(("agent", "endpoint"), [(label, a["endpoint"], a, "") for label, a in stage["agents"].items()])
        if stage.get("reward_model_passes"):
            lines.append(f"  reward model: {stage['reward_model_passes']} local batches (no calls)")
        if stage.get("pool"):
            lines.append(f"  pool: {stage['pool']}")
        if stage.get("margin"):
            lines.append(f"  pairs: {stage['margin']}")
    lines += ["", "per endpoint:"]
    rows = [(name, e["model"], e, "" if e["priced"] else " (unpriced)") for name, e in est["endpoints"].items()]
    lines += _table(("endpoint", "model"), rows)
    t = est["total"]
    lines += [
        "",
        f"total: {t['calls']} calls{bound}, ~{t['input_tokens']:,} input + ~{t['output_tokens']:,} output "
        f"tokens, ~${t['cost']:.4f}"
        + (f" online, ~${t['batch_cost']:.4f} at batch price" if t.get("batch_cost") is not None else ""),
        "assumptions:",
    ]
    lines += [f"  - {note}" for note in est["assumptions"]]
    return "\n".join(lines)


def _table(heads: tuple[str, str], rows: list[tuple[str, str, dict[str, Any], str]]) -> list[str]:
    """Aligned rows: two text columns as wide as their longest cell, then calls, tokens, cost."""
    w1 = max([len(heads[0])] + [len(r[0]) for r in rows])
    w2 = max([len(heads[1])] + [len(r[1]) for r in rows])
    out = [f"  {heads[0]:<{w1}}  {heads[1]:<{w2}} {'calls':>8} {'in tokens':>12} {'out tokens':>12} {'cost':>10}"]
    for first, second, a, note in rows:
        cost = f"${a['cost']:.4f}"
        out.append(
            f"  {first:<{w1}}  {second:<{w2}} {a['calls']:>8} {a['input_tokens']:>12,} {a['output_tokens']:>12,} "
            f"{cost:>10}{note}"
        )
    return out
