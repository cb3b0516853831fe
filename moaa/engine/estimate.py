"""How many model calls a generation method makes per prompt: for dry runs and cost estimates.

Mirrors the engine (moaa.engine.moa / self_moa / smoa) on the path where every call succeeds;
for SMoA it is the upper bound (no early stop).
"""

from __future__ import annotations

import math
from typing import Any

from moaa.config import AgentConfig, EndpointConfig, GenerationConfig


def seq_steps(samples: int, window: int, new_per_step: int) -> int:
    """Aggregator calls of Self-MoA-Seq: one for the first window, one per `new_per_step` after it."""
    return 1 + math.ceil(max(0, samples - window) / new_per_step)


def calls_per_prompt(
    gen: GenerationConfig,
    *,
    turns: int = 1,
    endpoints: dict[str, EndpointConfig] | None = None,
    stage: str = "sft",
) -> dict[str, Any]:
    """Calls and generated answers per prompt of `turns` assistant turns, per agent and endpoint.

    Returns {"method", "stage", "turns", "calls", "answers", "upper_bound", "agents": {label:
    {"endpoint", "calls", "answers"}}, "endpoints": {name: calls}, "per_run": {label: calls}}.
    "calls" counts requests: an n=K sampling call counts once where the endpoint honours n and
    K times where `endpoints` says it does not (supports_n: false); "answers" counts texts.
    """
    rows: list[tuple[str, AgentConfig, int, int]] = []  # label, agent, calls, answers
    p0 = gen.proposers[0]
    agg = gen.aggregator
    method = gen.method
    per_run: dict[str, int] = {}
    if method == "single":
        rows.append(("proposers[0]", p0, 1, 1))
    elif method in ("moa", "moa-lite"):
        layers = gen.layers or 2
        rows += [(f"proposers[{i}]", p, layers - 1, layers - 1) for i, p in enumerate(gen.proposers)]
        rows.append(("aggregator", agg, 1, 1))
    elif method == "self-moa":
        k = gen.self_moa.samples
        rows += [("proposers[0]", p0, _sampling_calls(p0, k, endpoints), k), ("aggregator", agg, 1, 1)]
    elif method == "self-moa-seq":
        s, steps = gen.seq.samples, seq_steps(gen.seq.samples, gen.seq.window, gen.seq.new_per_step)
        rows += [("proposers[0]", p0, _sampling_calls(p0, s, endpoints), s), ("aggregator", agg, steps, steps)]
    elif method == "smoa":
        r = gen.smoa.rounds
        rows += [(f"proposers[{i}]", p, r, r) for i, p in enumerate(gen.proposers)]
        rows += [("smoa.moderator", gen.smoa.moderator or agg, r, r), ("aggregator", agg, 1, 1)]
        if not gen.smoa.roles:
            per_run["smoa.role_generator"] = 1
    agents: dict[str, dict[str, Any]] = {}
    by_endpoint: dict[str, int] = {}
    for label, agent, calls, answers in rows:
        assert agent is not None
        agents[label] = {"endpoint": agent.endpoint, "calls": calls * turns, "answers": answers * turns}
        by_endpoint[agent.endpoint] = by_endpoint.get(agent.endpoint, 0) + calls * turns
    return {
        "method": method,
        "stage": stage,
        "turns": turns,
        "calls": sum(a["calls"] for a in agents.values()),
        "answers": sum(a["answers"] for a in agents.values()),
        "upper_bound": method == "smoa" and gen.smoa.early_stop,
        "agents": agents,
        "endpoints": by_endpoint,
        "per_run": per_run,
    }


def _sampling_calls(agent: AgentConfig, k: int, endpoints: dict[str, EndpointConfig] | None) -> int:
    endpoint = (endpoints or {}).get(agent.endpoint)
    return k if endpoint is not None and endpoint.supports_n is False and k > 1 else 1
