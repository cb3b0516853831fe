"""Benchmark: how many prompts keep a DPO pair at each scorer's margin, on a real spread of scores.

Usage: python benchmarks/bench_margins.py --n 8 [--samples 5] [--base-url URL --model NAME]

For n prompts of configs/prompts/default.jsonl, the policy (configs/local.yaml's: temperature 1.0,
answers of at most 120 words) samples `--samples` answers, and the candidates are scored as the
preference stage scores them: pointwise (local.yaml's judge: helpfulness, ratings only, weighted by
log-probabilities) and pairwise (the letter only, in both orders), the pairwise answers read twice:
by their letters and by their log-probabilities. For each reading it reports each prompt's best -
worst margin (quartiles) and the share of prompts that keep a pair at the old margin (0.5 in every
scorer's units) and at the kind's default (moaa.config.scales). A reward model is not run here
(none runs offline); its row is the ArmoRM-like example, computed, not measured.

Starts the embedded local model (moaa.local.server.LocalServer) unless --base-url names a running
OpenAI-compatible server. Prints a table (pairs kept also at a grid of margins) and writes JSON to
bench_results/ (while it runs, margins-<time>.partial.json holds the prompts scored so far).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moaa.config import AgentConfig, EndpointConfig, ScorerConfig  # noqa: E402
from moaa.config.scales import scale_of  # noqa: E402
from moaa.errors import MoaaError  # noqa: E402
from moaa.models.client import OpenAIChatClient  # noqa: E402
from moaa.models.stats import RunStats  # noqa: E402
from moaa.preference.candidates import conversation_of, sample_candidates  # noqa: E402
from moaa.preference.pairs import choose_pair  # noqa: E402
from moaa.preference.stage import build_scorer  # noqa: E402
from moaa.rows import Prompt  # noqa: E402

OLD_MARGIN = 0.5  # the single default before margins had units
GRID = (0.02, 0.05, 0.1, 0.25, 0.5)  # margins the table also counts kept pairs at
ARMO_LIKE = [0.12, 0.15, 0.09, 0.18, 0.11]  # five samples of one prompt, ArmoRM-style (issue 36)
POLICY = {"endpoint": "local", "temperature": 1.0, "max_tokens": 512,
          "role": "Answer the user concisely, in at most 120 words."}  # fmt: skip
JUDGE = {"endpoint": "local", "temperature": 0.0, "max_tokens": 48}
SCORERS = {
    "pointwise": ScorerConfig(kind="pointwise", judges=[JUDGE], criteria=["helpfulness"], rationales=False,
                              weighted_ratings=True),
    "pairwise": ScorerConfig(kind="pairwise", judges=[JUDGE], rationales=False, weighted_ratings=True),
}  # fmt: skip


def load_prompts(n: int) -> list[Prompt]:
    lines = (ROOT / "configs/prompts/default.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [Prompt.from_messages([{"role": "user", "content": json.loads(line)["prompt"]}]) for line in lines]


async def score_prompt(prompt: Prompt, client: Any, samples: int) -> dict[str, Any]:
    """One prompt: its distinct candidates, and their scores under each reading."""
    started = time.perf_counter()
    got = await sample_candidates(conversation_of(prompt.messages), prompt.prompt_id, AgentConfig(**POLICY),
                                  client, samples)  # fmt: skip
    texts = [c.text for c in got.candidates]
    readings: dict[str, list[float | None]] = {}
    if len(texts) >= 2:
        for name, cfg in SCORERS.items():
            scores = await build_scorer(cfg, {"local": client}).score(prompt, got.candidates)
            if name == "pairwise":
                hard = [s.details.hard_score for s in scores]  # weighted: what the letters alone gave
                readings["pairwise letters"] = [s.score if h is None else h for s, h in zip(scores, hard, strict=True)]
                readings["pairwise weighted"] = [s.score for s in scores]
            else:
                readings["pointwise weighted"] = [s.score for s in scores]
    return {"prompt_id": prompt.prompt_id, "candidates": texts, "cut": got.truncated_dropped,
            "scores": readings, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def kept(texts: list[str], scores: list[float | None], margin: float) -> bool:
    return choose_pair(texts, scores, margin).reason is None


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per reading: prompts scored, margin quartiles, and prompts keeping a pair at the old and new margins."""
    out = {}
    for reading in ("pointwise weighted", "pairwise letters", "pairwise weighted"):
        kind = reading.split()[0]
        new = scale_of(kind).default_margin
        rows = [(r["candidates"], r["scores"][reading]) for r in results if reading in r["scores"]]
        rows = [(t, s) for t, s in rows if sum(v is not None for v in s) >= 2]
        margins = [max(v for v in s if v is not None) - min(v for v in s if v is not None) for _, s in rows]
        quartiles = statistics.quantiles(margins, n=4, method="inclusive") if len(margins) >= 2 else margins * 3
        out[reading] = {
            "prompts": len(rows),
            "margin_quartiles": [round(q, 3) for q in quartiles],
            "old_margin": OLD_MARGIN,
            "kept_old": sum(kept(t, s, OLD_MARGIN) for t, s in rows),
            "new_margin": new,
            "kept_new": sum(kept(t, s, new) for t, s in rows),
            "kept_at": {str(m): sum(kept(t, s, m) for t, s in rows) for m in GRID},
        }
    texts = [str(v) for v in ARMO_LIKE]
    new = scale_of("reward_model").default_margin
    spread = round(max(ARMO_LIKE) - min(ARMO_LIKE), 3)
    out["reward_model (ArmoRM-like example)"] = {
        "prompts": 1, "margin_quartiles": [spread] * 3, "old_margin": OLD_MARGIN,
        "kept_old": int(kept(texts, ARMO_LIKE, OLD_MARGIN)), "new_margin": new,
        "kept_new": int(kept(texts, ARMO_LIKE, new)),
        "kept_at": {str(m): int(kept(texts, ARMO_LIKE, m)) for m in GRID},
    }  # fmt: skip
    return out


async def run(base_url: str, model: str, n: int, samples: int, partial: Path) -> dict[str, Any]:
    """Every prompt scored in turn; the results so far are rewritten to `partial` after each one, so a
    run cut short (a timeout on a loaded machine) keeps what it measured."""
    endpoint = EndpointConfig(base_url=base_url, model=model, local=True, timeout_s=600, max_retries=1)
    client = OpenAIChatClient("local", endpoint, RunStats(), api_key="not-needed")
    results = []
    for i, prompt in enumerate(load_prompts(n)):
        r = await score_prompt(prompt, client, samples)
        results.append(r)
        partial.write_text(json.dumps({"results": results}, ensure_ascii=False))
        print(f"[{i + 1}/{n}] {len(r['candidates'])} candidates, {r['seconds']:.0f}s: "
              + "; ".join(f"{k} {v}" for k, v in r["scores"].items()), file=sys.stderr, flush=True)  # fmt: skip
    return {"summary": summarise(results), "results": results}


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    grid = "".join(f" {'@' + str(m):>6}" for m in GRID)
    lines = [f"{'scores':<36} {'prompts':>7} {'margin p25/p50/p75':>20} {'kept at 0.5':>11} {'default':>7} "
             f"{'kept at default':>15}   kept at{grid}"]  # fmt: skip
    for reading, r in summary.items():
        q = "/".join(f"{v:.2f}" for v in r["margin_quartiles"]) or "-"
        at = "".join(f" {r['kept_at'][str(m)]:>6}" for m in GRID)
        lines.append(f"{reading:<36} {r['prompts']:>7} {q:>20} {r['kept_old']:>11} {r['new_margin']:>7g} "
                     f"{r['kept_new']:>15}          {at}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="prompts (the first n of configs/prompts/default.jsonl)")
    parser.add_argument("--samples", type=int, default=5, help="policy samples per prompt (MoAA: 5)")
    parser.add_argument("--base-url", default=None, help="an already running OpenAI-compatible server")
    parser.add_argument("--model", default=None, help="model name at --base-url (default: the local model)")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args(argv)
    from moaa.local.model import LOCAL_MODEL_NAME

    model = args.model or LOCAL_MODEL_NAME
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    partial = out / f"margins-{stamp}.partial.json"
    try:
        if args.base_url:
            report = asyncio.run(run(args.base_url, model, args.n, args.samples, partial))
        else:
            from moaa.local.server import LocalServer

            with LocalServer() as server:
                server.start()
                report = asyncio.run(run(server.base_url, model, args.n, args.samples, partial))
    except MoaaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"benchmark": "margins", "model": model, "n": args.n, "samples": args.samples,
              "seconds": round(time.time() - started, 1)} | report  # fmt: skip
    print(f"margins, model {model}, {args.n} prompts x {args.samples} samples ({report['seconds']:.0f}s)")
    print(format_table(report["summary"]))
    path = out / f"margins-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    partial.unlink(missing_ok=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
