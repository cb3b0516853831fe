"""Answers cut at max_tokens (finish_reason "length") never become data unless `answers.truncated: keep`,
against the real OpenAI-compatible test server."""

from __future__ import annotations

import asyncio
import re

import pytest

from moaa.config import AnswersConfig, EndpointConfig, GenerationConfig
from moaa.engine import answer_prompt
from moaa.models.client import OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.rows import Prompt
from moaa.testing.openai_server import OpenAITestServer
from tests.pipeline_helpers import (
    latest_version,
    run_main,
    verdict_responder,
    version_rows,
    write_config,
    write_prompts,
)


def answer(srv: OpenAITestServer, answers: AnswersConfig, max_tokens: int):
    """One moa-lite prompt (two proposers, an aggregator) through real clients of `srv`."""
    gen = GenerationConfig.model_validate(
        {
            "method": "moa-lite",
            "proposers": [{"endpoint": "p", "max_tokens": 100}, {"endpoint": "p", "max_tokens": 100}],
            "aggregator": {"endpoint": "agg", "max_tokens": max_tokens},
        }
    )

    async def go():
        stats = RunStats()
        clients = {
            name: OpenAIChatClient(name, EndpointConfig(model=name, base_url=srv.base_url, max_retries=0), stats, "k")
            for name in ("p", "agg")
        }
        try:
            return await answer_prompt(Prompt.from_messages([{"role": "user", "content": "hi"}]), gen, clients,
                                       answers=answers)  # fmt: skip
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(go())


def aggregator_budgets(srv: OpenAITestServer) -> list[int]:
    return [r["body"]["max_tokens"] for r in srv.requests if r["model"] == "agg"]


@pytest.mark.parametrize(
    "rule, cap, budgets, reasons",
    [
        ("drop", 4096, [20], ["length"]),  # cut: no row, a transient `truncated` failure
        ("reask", 4096, [20, 40, 80], ["length", "length", "stop"]),  # 80 fits the ~64-word reply
        ("reask", 40, [20, 40], ["length", "length"]),  # the cap stops the re-asks, then it is dropped
        ("keep", 4096, [20], ["length"]),  # kept, as asked
    ],
)
def test_final_answer_cut_at_max_tokens(rule, cap, budgets, reasons):
    with OpenAITestServer(filler_words=60) as srv:  # every reply is ~64 words; proposers may write 100
        result = answer(srv, AnswersConfig(truncated=rule, reask_max_tokens=cap), max_tokens=20)
        assert aggregator_budgets(srv) == budgets
    final = [s for s in result.trace if s.kind == "aggregate"]
    assert [s.finish_reason for s in final] == reasons
    assert result.counters.get("truncated_references", 0) == 0
    assert result.counters.get("truncated_reasked", 0) == len(budgets) - 1
    if reasons[-1] == "length" and rule != "keep":
        assert result.row is None
        assert (result.failure.reason, result.failure.transient) == ("truncated", True)
        assert "aggregate of aggregator (layer 2, endpoint agg, agg): answer cut at max_tokens" in result.failure.error
        assert result.counters["truncated_dropped"] == 1
    else:
        assert result.failure is None
        assert result.row.messages[-1]["content"] == final[-1].text
        assert result.counters.get("truncated_kept", 0) == (rule == "keep")
        assert "truncated_dropped" not in result.counters


def test_cut_references_are_kept_and_counted():
    with OpenAITestServer(filler_words=150) as srv:  # proposers (100 tokens) are cut, the aggregator is not
        result = answer(srv, AnswersConfig(truncated="drop"), max_tokens=400)
    assert result.row is not None
    assert result.counters["truncated_references"] == 2  # both proposals cut, still fed to the aggregator
    assert "truncated_dropped" not in result.counters


SUMMARY = re.compile(r"(\w+) (\d+) of (\d+) answers truncated \(dropped (\d+), re-asked (\d+), kept (\d+),")


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["drop", "keep"])
def test_a_server_cutting_20_percent_of_replies(rule, tmp_path, prefect_harness, monkeypatch, capsys):
    """20% of replies cut (finish_reason length): under drop no sft answer and no dpo side is a cut
    text, and the summary counts what was dropped; under keep the cut texts are data, counted."""
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path, 24)
    with OpenAITestServer(fault_rate=0.2, fault_mix=["length"], seed=3, responder=verdict_responder) as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={prompts}", "prompts.limit=null", "run.shard_size=8",
            f"answers.truncated={rule}", "preference.enabled=true", "preference.policy.endpoint=test",
            "preference.policy.temperature=1.0", "preference.samples=3", "preference.limit=12",
            "preference.min_margin=0", "preference.scorer.judges=[{endpoint: test}]",
        )  # fmt: skip
        assert run_main("run", str(cfg)) == 0
        faults = [r for r in srv.requests if r["fault"] == "length"]
    assert 0.1 < len(faults) / len(srv.requests) < 0.3
    out = capsys.readouterr().out
    version = latest_version(tmp_path / "data")
    trace = version_rows(version, "trace")
    cut = {s["text"] for s in trace if s["finish_reason"] == "length" and s["kind"] in ("aggregate", "sample")}
    assert cut  # the server did cut final answers and samples
    sft_answers = {r["messages"][-1]["content"] for r in version_rows(version, "sft")}
    dpo_sides = {r[side][0]["content"] for r in version_rows(version, "dpo") for side in ("chosen", "rejected")}
    failures = version_rows(version, "failures")
    # per stage: (truncated, steps, dropped, re-asked, kept)
    counts = {m[0]: tuple(map(int, m[1:])) for m in SUMMARY.findall(out)}
    cut_final = sum(s["finish_reason"] == "length" and s["kind"] == "aggregate" for s in trace)
    cut_samples = sum(s["finish_reason"] == "length" and s["kind"] == "sample" for s in trace)
    card = (version / "README.md").read_text()
    sft_counts, pref_counts = counts["sft"], counts["preference"]
    assert (
        f"sft: dropped {sft_counts[2]}, re-asked {sft_counts[3]}, kept {sft_counts[4]}" in card
        and f"preference: dropped {pref_counts[2]}, re-asked {pref_counts[3]}, kept {pref_counts[4]}" in card
        and f"`answers.truncated: {rule}`" in card
    )
    if rule == "drop":
        assert not cut & sft_answers and not cut & dpo_sides
        truncated = [f for f in failures if f["reason"] == "truncated"]
        assert {f["stage"] for f in truncated} <= {"sft", "preference"} and all(f["transient"] for f in truncated)
        sft_cut = [f for f in truncated if f["stage"] == "sft"]
        assert len(sft_cut) == counts["sft"][2] == cut_final > 0  # every cut final answer dropped, its prompt failed
        assert counts["preference"][2] == cut_samples > 0 and counts["preference"][4] == 0
        assert all(re.search(r"(endpoint test, test-model).*cut at", f["error"]) for f in truncated)
    else:
        assert cut & (sft_answers | dpo_sides)  # opted in: cut texts are data
        assert counts["sft"][4] == cut_final > 0 and counts["sft"][2] == 0
        assert counts["preference"][2] == 0 and counts["preference"][4] == cut_samples > 0
        assert not [f for f in failures if f["reason"] == "truncated"]
