"""Verified pass@1 on configs/prompts/verified.jsonl: one proposer, MoA, Self-MoA and the best of K samples.

Each prompt of the verifiable set (code with tests, word problems with answers, SQL with a fixture,
IFEval constraints) is answered, in one run and on the same model, by:
- single: the config's first proposer alone (`sft.method: single`);
- moa: the config's own MoA (`configs/local.yaml`: three roles of one model, then the aggregator);
- self-moa: K samples of the first proposer at temperature 0.7 (the common choice; the paper's
  is unpublished), aggregated;
- best-of-K (oracle): any of those K samples passes: the ceiling a mixture that picked the right
  sample would reach (ALGORITHMS.md section 10).
Each final answer is checked against its reference with moaa.verify (no re-ask, no fallback: the
method's own pass@1). Printed: pass@1 with its 95% Wilson interval, calls and tokens per prompt,
calls, tokens and dollars (at the endpoints' prices, where set) per verified row (the cost of one
row that passes), and the passes per category. The model is
the embedded one (the config's local endpoint, started here) unless `--base-url` names a server.

    make bench ARGS="--only verified"                      # the embedded model, every prompt
    python -m benchmarks --only verified --prompts 16      # the first 16 (they interleave the categories)
    python -m benchmarks --only verified --base-url http://127.0.0.1:8000/v1 --model my-model
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, figure, load_prompt_file
from moaa.config import GenerationConfig, MoaaConfig, load_config
from moaa.rows import Prompt

NAME = "verified"
PROMPTS = ROOT / "configs/prompts/verified.jsonl"
METHODS = ("single", "moa", "self-moa", "oracle")
SAMPLE_TEMPERATURE = 0.7


@dataclass
class Tally:
    """One method's outcomes: passes per prompt id (and category), calls and tokens."""

    passed: dict[str, bool] = field(default_factory=dict)
    category: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    tokens: int = 0
    dollars: float = 0.0

    def add(self, prompt: Prompt, ok: bool, calls: int, steps: list[Any], price: Any) -> None:
        self.passed[prompt.prompt_id] = ok
        self.category[prompt.prompt_id] = prompt.category or ""
        self.calls += calls
        self.tokens += sum(s.prompt_tokens + s.completion_tokens for s in steps)
        self.dollars += sum(price(s) for s in steps)


def generation(config: MoaaConfig, method: str, samples: int) -> GenerationConfig:
    """The SFT settings of one method, from the config's own (its first proposer, its aggregator)."""
    sft = config.sft.model_dump(exclude={"verify", "layers", "method"}) | {"verify": "off"}
    if method == "single":
        return GenerationConfig.model_validate(sft | {"method": "single", "proposers": sft["proposers"][:1]})
    if method == "moa":
        return GenerationConfig.model_validate(sft | {"method": config.sft.method, "layers": config.sft.layers})
    first = sft["proposers"][0] | {"temperature": SAMPLE_TEMPERATURE}
    return GenerationConfig.model_validate(
        sft | {"method": "self-moa", "proposers": [first], "self_moa": {"samples": samples}}
    )


async def measure(config: MoaaConfig, prompts: list[Prompt], samples: int) -> dict[str, Tally]:
    """Every method on every prompt (the endpoints of `config` already reachable)."""
    from moaa.engine import answer_prompt
    from moaa.models.session import build_clients
    from moaa.models.stats import RunStats
    from moaa.verify import Verifier

    gens = {method: generation(config, method, samples) for method in METHODS[:3]}
    clients = build_clients(config.model_copy(update={"cache": config.cache.model_copy(update={"enabled": False})}),
                            RunStats())  # fmt: skip
    verifier = Verifier(config.verify)
    tallies = {method: Tally() for method in METHODS}
    slots = asyncio.Semaphore(max(2, 2 * max(config.endpoints[n].max_concurrency for n in clients)))

    async def one(prompt: Prompt, method: str) -> None:
        async with slots:
            result = await answer_prompt(prompt, gens[method], clients, answers=config.answers)
        text = result.row.messages[-1]["content"] if result.row is not None else ""
        verdict = await verifier.check(prompt, text) if text else None
        tallies[method].add(prompt, bool(verdict and verdict.passed), result.calls, result.trace, price)
        if method == "self-moa":  # the oracle: any of the K samples it aggregated
            samples = [t for t in result.trace if t.kind == "sample"]
            checked = await asyncio.gather(*(verifier.check(prompt, t.text) for t in samples if t.text.strip()))
            calls = sum(1 for t in samples if t.prompt_tokens) or 1  # one n=K call (K where n is ignored)
            tallies["oracle"].add(prompt, any(v is not None and v.passed for v in checked), calls, samples, price)

    prices = {ep.model: (ep.price_input_per_mtok or 0.0, ep.price_output_per_mtok or 0.0)
              for ep in config.endpoints.values()}  # fmt: skip

    def price(step: Any) -> float:
        per_in, per_out = prices.get(step.model, next(iter(prices.values())))
        return (step.prompt_tokens * per_in + step.completion_tokens * per_out) / 1e6

    try:
        await asyncio.gather(*(one(p, m) for p in prompts for m in METHODS[:3]))
    finally:
        for client in clients.values():
            if hasattr(client, "aclose"):
                await client.aclose()
    return tallies


def table(tallies: dict[str, Tally], samples: int, labels: dict[str, str]) -> list[str]:
    """The pass@1 table: each method's pass rate, Wilson interval, calls and tokens per prompt and per verified row."""
    from moaa.train.winrate import wilson_interval

    priced = any(t.dollars for t in tallies.values())
    head = ["method", "pass@1", "95% Wilson", "verified", "calls/prompt", "tokens/prompt", "calls/verified",
            "tokens/verified", *(["$/verified"] if priced else [])]  # fmt: skip
    rows = [head]
    for method in METHODS:
        t = tallies[method]
        n, k = len(t.passed), sum(t.passed.values())
        lo, hi = wilson_interval(k, n)
        rows.append([labels[method], f"{k / n:.3f}" if n else "-", f"[{lo:.3f}, {hi:.3f}]", f"{k}/{n}",
                     f"{t.calls / n:.2f}" if n else "-", f"{t.tokens / n:,.0f}" if n else "-", _per(t.calls, k),
                     _per(t.tokens, k), *([f"{t.dollars / k:.5f}" if k else "-"] if priced else [])])  # fmt: skip
    return _aligned(rows)


def _per(total: int, verified: int) -> str:
    return f"{total / verified:,.1f}" if verified else "-"


def by_category(tallies: dict[str, Tally], labels: dict[str, str]) -> list[str]:
    """Passes per category and method (k/n)."""
    categories = sorted({c for t in tallies.values() for c in t.category.values()})
    rows = [["category", *(labels[m] for m in METHODS)]]
    for category in categories:
        cells = []
        for method in METHODS:
            t = tallies[method]
            ids = [pid for pid, c in t.category.items() if c == category]
            cells.append(f"{sum(t.passed[pid] for pid in ids)}/{len(ids)}")
        rows.append([category, *cells])
    return _aligned(rows)


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def labels_of(config: MoaaConfig, samples: int) -> dict[str, str]:
    first = config.sft.proposers[0]
    name = first.name or "proposers[0]"
    return {"single": f"single ({name})", "moa": config.sft.method, "self-moa": f"self-moa (K={samples})",
            "oracle": f"best-of-{samples} (oracle)"}  # fmt: skip


def load_set(limit: int | None) -> list[Prompt]:
    return load_prompt_file(PROMPTS, limit)


def bench_config(work: Path, base_url: str | None, model: str | None, config_path: Path) -> MoaaConfig:
    """The config whose endpoints and SFT settings are measured; `base_url` points every endpoint at a server."""
    overrides = [f"run.work_dir={work / 'work'}", f"output.root={work / 'data'}"]
    config = load_config(config_path, overrides)
    if base_url:
        endpoints = {
            name: ep.model_copy(update={"base_url": base_url, "local": False, "model": model or ep.model})
            for name, ep in config.endpoints.items()
        }
        config = config.model_copy(update={"endpoints": endpoints})
    return config


def report(config: MoaaConfig, prompts: list[Prompt], samples: int) -> tuple[dict[str, Tally], list[str], float]:
    """Measure and render: (tallies, the printed lines, seconds)."""
    started = time.perf_counter()
    tallies = asyncio.run(measure(config, prompts, samples))
    seconds = time.perf_counter() - started
    labels = labels_of(config, samples)
    model = ", ".join(sorted({ep.model for ep in config.endpoints.values()}))
    lines = [f"verified pass@1 on {len(prompts)} prompts of {PROMPTS.name}, model {model}, {seconds:.0f} s", ""]
    lines += table(tallies, samples, labels) + [""] + by_category(tallies, labels)
    return tallies, lines, seconds


def run(work: Path, quick: bool, prompts: int | None = None, base_url: str | None = None, model: str | None = None,
        config: str | None = None, **_: Any) -> list:  # fmt: skip
    from moaa.models.session import local_endpoints

    samples = 3 if quick else 4
    chosen = load_set(prompts or (16 if quick else None))
    cfg = bench_config(work, base_url, model, Path(config) if config else ROOT / "configs/local.yaml")
    work.mkdir(parents=True, exist_ok=True)
    with local_endpoints(cfg, work) as served:
        tallies, lines, seconds = report(served, chosen, samples)
    print("\n".join("   " + line for line in lines), flush=True)
    return figures(tallies, samples, labels_of(cfg, samples), seconds)


def figures(tallies: dict[str, Tally], samples: int, labels: dict[str, str], seconds: float) -> list:
    from moaa.train.winrate import wilson_interval

    out = []
    for method in METHODS:
        t = tallies[method]
        n, k = len(t.passed), sum(t.passed.values())
        lo, hi = wilson_interval(k, n)
        cost = f"{t.tokens / k:,.0f} tokens per verified row" if k else "no verified row"
        out.append(figure(NAME, f"pass@1 {labels[method]}", k / n if n else 0.0, "", note=f"{k}/{n}, 95% Wilson "
                          f"[{lo:.3f}, {hi:.3f}], {cost}", passed=k, prompts=n, calls=t.calls, tokens=t.tokens,
                          dollars=t.dollars, per_category=_per_category(t), seconds=seconds))  # fmt: skip
    return out


def _per_category(t: Tally) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for pid, ok in t.passed.items():
        out[t.category[pid]][0] += ok
        out[t.category[pid]][1] += 1
    return dict(out)
