"""Dry run: validate a config and its prompts, then estimate calls, tokens and cost before any model is called.

    from moaa.work.estimate import estimate_run
    from moaa.work.estimate_report import format_estimate
    print(format_estimate(estimate_run(config)))        # what `moaa run CONFIG --dry-run` prints

Calls come from the stages' own counters (`moaa.engine.calls_per_prompt`, which adds up the
method's call plan, and `moaa.preference.calls_per_prompt`), and what each SFT call sends is built
by the plan's own message builders, so the estimate and the engine never diverge; they are exact
on the path where every call succeeds (SMoA without early stop, every preference candidate
distinct, every verdict parsed first time). Tokens are estimates: input is the text each call
would send, built with the real prompt builders (conversation, role, template, references) at
CHARS_PER_TOKEN characters per token; output, and every reference an aggregator or judge reads,
is OUTPUT_FRACTION of the agent's max_tokens (DEFAULT_MAX_TOKENS when neither the agent nor its
endpoint sets one); the shapes and these constants are in moaa.work.call_shapes. No server is
started and nothing is sent over the network.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from moaa.config import AgentConfig, MoaaConfig
from moaa.config.scales import describe_margin
from moaa.errors import MoaaError
from moaa.rows import Prompt
from moaa.work.call_shapes import (
    MESSAGE_TOKENS,
    PROBE,
    Shape,
    output_tokens,
    placeholder,
    preference_agent,
    preference_shapes,
    sft_shapes,
    shape_overhead,
    tokens_of,
    turn_sizes,
)
from moaa.work.estimate_report import assumptions, describe_pool, verification_notes

if TYPE_CHECKING:
    from moaa.sources import PromptStream

Prompts = Union[list[Prompt], "PromptStream"]  # sized and iterable; a stream is read back from disk

log = logging.getLogger(__name__)


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
        "assumptions": assumptions(config) + verification_notes(config, checked, len(prompts)),
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
        "assumptions": assumptions(config)
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
    task = [{"role": "user", "content": placeholder(sum(tokens_of([{"content": s.instruction + s.input}])
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


def _sft_stage(config: MoaaConfig, prompts: Prompts) -> dict[str, Any]:
    from moaa.engine.methods import calls_per_prompt, plan_of

    gen, eps = config.sft, config.endpoints
    turns = [turn_sizes(p.messages) for p in prompts]
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
        agents[label] = _load(config, agent, calls, calls, shapes[label], calls * tokens_of(PROBE), calls)
        per_run += calls
    upper = bool(one["upper_bound"])
    return _stage(len(prompts), n_turns, agents, per_run, upper)


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
        agents[label] = _load(config, preference_agent(pref, label), calls, answers, shapes[label], convo, answered)
    return _stage(len(prompts), answered, agents, 0, False) | {
        "reward_model_passes": counts["reward_model_passes"] * answered,
        "margin": describe_margin(pref.min_margin, pref.scorer.judged_kind()),
        "pool": describe_pool(pref),
    }


def _load(
    config: MoaaConfig, agent: AgentConfig, calls: int, answers: int, shapes: list[Shape], convo: float, turns: int
) -> dict[str, Any]:
    """One agent's calls with their input/output tokens and cost over the whole stage.

    `convo`: conversation tokens summed over the stage's `turns`; each call sends its turn's
    conversation plus what its shape adds (role, template, references).
    """
    from moaa.models.stats import call_cost

    endpoint = config.endpoints[agent.endpoint]
    shape_calls, extra = shape_overhead(shapes)
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
