"""What the preference stage costs per prompt, for the dry-run estimate (moaa.work.estimate): calls and
answers per pool agent, judge and endpoint, read from the config alone."""

from __future__ import annotations

from typing import Any

from moaa.config import EndpointConfig, PreferenceConfig
from moaa.preference.stage import criteria_names
from moaa.preference.stage_trace import STAGE


def calls_per_prompt(pref: PreferenceConfig, *, endpoints: dict[str, EndpointConfig] | None = None) -> dict[str, Any]:
    """Calls and answers per prompt when all K candidates differ and every verdict parses first time.

    Returns {"stage", "scorer", "samples", "calls", "answers", "agents": {label: {"endpoint",
    "calls", "answers"}}, "endpoints": {name: calls}, "reward_model_passes"}. Each pool agent's n=K
    call (label: its config path, policy or candidates[i]) counts once, or K times where `endpoints`
    says the endpoint ignores n (supports_n: false); the mixture's SFT answer costs no call but is one
    more candidate for the scorer. "samples" is the pool's candidates per prompt.
    """
    k, cfg = pref.pool_size(), pref.scorer
    rows: list[tuple[str, Any, int, int]] = []
    for member in pref.pool():
        if member.agent is not None:
            endpoint = (endpoints or {}).get(member.agent.endpoint)
            n = member.samples
            calls = n if endpoint is not None and endpoint.supports_n is False else 1
            rows.append((member.path, member.agent, calls, n))
    kind = cfg.judged_kind()  # the verifier's tie-breaker: at most this, asked only on ties
    per_judge = {"pointwise": k, "pairwise": k * (k - 1), "moa_judge": k}.get(kind, 0)
    rows += [(f"scorer.judges[{i}]", a, per_judge, per_judge) for i, a in enumerate(cfg.judges) if per_judge]
    if pref.pair_audit:  # the written pair, both orders, per judge
        rows += [(f"pair_audit.judges[{i}]", a, 2, 2) for i, a in enumerate(cfg.judges)]
    if kind == "moa_judge" and cfg.aggregator is not None:
        names = criteria_names(cfg) or []
        select = 1 if len(names) > cfg.num_criteria else 0
        rows.append(("scorer.aggregator", cfg.aggregator, k + select, k + select))
    agents = {label: {"endpoint": a.endpoint, "calls": calls, "answers": answers} for label, a, calls, answers in rows}
    by_endpoint: dict[str, int] = {}
    for info in agents.values():
        by_endpoint[info["endpoint"]] = by_endpoint.get(info["endpoint"], 0) + info["calls"]
    return {
        "stage": STAGE,
        "scorer": cfg.kind,
        "samples": k,
        "calls": sum(a["calls"] for a in agents.values()),
        "answers": sum(a["answers"] for a in agents.values()),
        "agents": agents,
        "endpoints": by_endpoint,
        "reward_model_passes": -(-k // cfg.batch_size) if kind == "reward_model" else 0,
    }
