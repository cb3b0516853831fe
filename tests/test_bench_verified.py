"""The `verified` benchmark against the OpenAI-compatible test server: one run prints pass@1 of one
proposer, MoA, Self-MoA and the best-of-K oracle with Wilson intervals and the cost per verified row."""

from __future__ import annotations

import json

from benchmarks.bench_verified import PROMPTS, bench_config, load_set, report, run
from moaa.testing.openai_server import OpenAITestServer
from moaa.train.winrate import wilson_interval
from tests.conftest import ROOT

ANSWERS = {row["prompt"]: row["reference"].get("answer") for row in map(json.loads, PROMPTS.open())}


def responder(request: dict) -> str | None:
    """The aggregator is always right; the first proposer ('precise' in configs/local.yaml) is wrong at its
    own temperature and, sampled at 0.7 (Self-MoA), right for the first two questions only."""
    messages = request["messages"]
    question = next(m["content"] for m in messages if m["role"] == "user")
    answer = ANSWERS.get(question)
    if answer is None:
        return None
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    if "Responses:\n\n" in system:
        return f"So the answer is {answer}."
    firsts = [q for q, a in ANSWERS.items() if a is not None][:2]
    if system.startswith("You are a precise") and request.get("temperature") == 0.7 and question in firsts:
        return f"The answer is {answer}."
    return "The answer is 7."


def test_one_run_prints_every_methods_pass_rate_interval_and_cost(tmp_path):
    math = [p for p in load_set(None) if p.category == "math"][:4]
    with OpenAITestServer(responder=responder) as srv:
        config = bench_config(tmp_path, srv.base_url, "test-model", ROOT / "configs/local.yaml")
        priced = config.endpoints["local"].model_copy(update={"price_input_per_mtok": 1, "price_output_per_mtok": 2})
        config = config.model_copy(update={"endpoints": {"local": priced}})
        tallies, lines, _ = report(config, math, samples=3)
    passes = {m: sum(t.passed.values()) for m, t in tallies.items()}
    assert passes == {"single": 0, "moa": 4, "self-moa": 4, "oracle": 2}
    text = "\n".join(lines)
    lo, hi = wilson_interval(2, 4)
    assert f"best-of-3 (oracle)  0.500   [{lo:.3f}, {hi:.3f}]  2/4" in text
    assert "single (precise)" in text and "moa " in text and "self-moa (K=3)" in text
    # calls per prompt: 1; 3 proposers + aggregator; one n=3 call + aggregator; the n=3 call
    assert [tallies[m].calls / 4 for m in ("single", "moa", "self-moa", "oracle")] == [1, 4, 2, 1]
    moa = next(line for line in lines if line.startswith("moa "))
    # calls, tokens and dollars per verified row (test-server tokens are words)
    assert moa.split()[-3:] == ["4.0", f"{tallies['moa'].tokens / 4:,.1f}", f"{tallies['moa'].dollars / 4:.5f}"]
    assert tallies["moa"].dollars > 0 and "$/verified" in lines[2]
    assert "math      0/4" in text.replace("single (precise)", "")


def test_the_benchmark_entry_point_runs_against_a_server(tmp_path, capsys):
    with OpenAITestServer(responder=responder) as srv:
        got = run(tmp_path, quick=True, prompts=4, base_url=srv.base_url, model="test-model")
    assert [f.name for f in got] == [
        "pass@1 single (precise)", "pass@1 moa", "pass@1 self-moa (K=3)", "pass@1 best-of-3 (oracle)",
    ]  # fmt: skip
    out = capsys.readouterr().out
    assert "verified pass@1 on 4 prompts of verified.jsonl, model test-model" in out
    assert "95% Wilson" in out and "tokens/verified" in out
