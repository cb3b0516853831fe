"""Variant cost: model calls and tokens per prompt for moa, moa-lite, self-moa, self-moa-seq and smoa.

Each preset in configs/ (the Together presets: moa.yaml, moa-lite.yaml, ...) runs its SFT stage on
the same prompts with every endpoint pointed at the test server, whose replies have a fixed length
(`--filler-words`) and whose usage counts words: tokens here are words, so compare variants with
each other, not with a provider's bill. Calls are HTTP requests. The reference is the dry-run
estimate (`moaa.engine.calls_per_prompt`) on a server that honours `n`; the column for servers
that ignore it (llama.cpp) is in the note. Dollars use the presets' prices on these word counts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, TestServer, figure, run_in_child, shard_of, write_prompts

NAME = "variants"
PRESETS = ("moa", "moa-lite", "self-moa", "self-moa-seq", "smoa")


def variant_cost(preset: str, base_url: str, work: str, prompts: int) -> dict[str, Any]:
    """Child: run one preset's SFT stage on the test server; calls, tokens and cost per prompt."""
    from moaa.config import load_config
    from moaa.engine import calls_per_prompt
    from moaa.work.stage_shard import ShardJob, run_shard

    folder = Path(work)
    config = load_config(ROOT / "configs" / f"{preset}.yaml")
    endpoints = {
        name: ep.model_copy(update={"base_url": base_url, "api_key_env": None, "max_retries": 2, "backoff_s": 0.05})
        for name, ep in config.endpoints.items()
    }
    config = config.model_copy(update={"endpoints": endpoints})
    config.cache.path = str(folder / "cache.sqlite")
    shard = shard_of(write_prompts(folder / "prompts.jsonl", prompts), folder / "sft")
    start = time.perf_counter()
    summary = run_shard(ShardJob("sft", config, shard, folder / "sft" / "shard-00000"))
    stats = summary.stats["endpoints"].values()
    answered = summary.counts.rows + summary.counts.failed
    no_n = {n: ep.model_copy(update={"supports_n": False}) for n, ep in endpoints.items()}
    estimate = calls_per_prompt(config.sft, endpoints=endpoints)
    # SMoA's role generation runs once per run, not per prompt (re-asked while replies are no role list).
    per_run = sum(c["requests"] for tag, c in summary.stats["tags"].items() if "role_generator" in tag)
    return {
        "preset": preset,
        "method": config.sft.method,
        "prompts": answered,
        "rows": summary.counts.rows,
        "requests_per_prompt": (sum(s["requests"] for s in stats) - per_run) / answered,
        "per_run_calls": per_run,
        "prompt_tokens_per_prompt": sum(s["prompt_tokens"] for s in stats) / answered,
        "completion_tokens_per_prompt": sum(s["completion_tokens"] for s in stats) / answered,
        "cost_per_1k_prompts": 1000 * sum(s["cost"] for s in stats) / answered,
        "estimate": estimate["calls"],
        "estimate_without_n": calls_per_prompt(config.sft, endpoints=no_n)["calls"],
        "seconds": time.perf_counter() - start,
    }


def run(work: Path, quick: bool, latency_ms: float = 50, **_: Any) -> list:
    prompts = 20 if quick else 100
    results = {}
    with TestServer(latency_ms, 60) as server:  # replies of ~70 words
        for preset in PRESETS:
            results[preset] = run_in_child(
                "benchmarks.bench_variants:variant_cost",
                {"preset": preset, "base_url": server.base_url, "work": str(work / preset), "prompts": prompts},
                work / f"{preset}.log",
            )
    return _figures(results)


def _figures(results: dict[str, dict[str, Any]]) -> list:
    tokens = {p: got["prompt_tokens_per_prompt"] + got["completion_tokens_per_prompt"] for p, got in results.items()}
    figures = []
    for preset, got in results.items():
        figures.append(figure(
            NAME, f"{preset}: calls per prompt", got["requests_per_prompt"], "calls", got["estimate"],
            "target", "= 1",
            note=f"configs/{preset}.yaml ({got['method']}); target = the dry-run estimate; "
            f"{got['estimate_without_n']} calls where the server ignores n; {got['rows']}/{got['prompts']} rows"
            + (f"; plus {got['per_run_calls']} role-generation call(s) per run (test-server replies are no role "
               "list, so it re-asks)" if got["per_run_calls"] else ""),
        ))  # fmt: skip
        figures.append(figure(
            NAME, f"{preset}: tokens per prompt", tokens[preset], "tokens", tokens["moa"], "baseline",
            note=f"{got['prompt_tokens_per_prompt']:,.0f} in + {got['completion_tokens_per_prompt']:,.0f} out "
            f"(test-server words); baseline = moa; ${got['cost_per_1k_prompts']:.2f} per 1k prompts at the "
            "preset's prices",
        ))  # fmt: skip
    return figures
