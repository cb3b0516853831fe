"""The throughput benchmark's reference rows: which run, the call count check, probes, curator-style calls."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks.bench_throughput import Arrivals
from benchmarks.common import write_prompts
from benchmarks.throughput_refs import check_count, curator_style, interpreter, reference_rows
from moaa.testing.openai_server import OpenAITestServer


def test_interpreter_option_wins_over_environment(tmp_path: Path) -> None:
    env = {"MOAA_BENCH_CURATOR_PYTHON": sys.executable}
    assert interpreter("curator", None, env) == sys.executable
    assert interpreter("curator", sys.executable, {}) == sys.executable
    assert interpreter("distilabel", None, env) is None
    with pytest.raises(FileNotFoundError, match="--curator-python"):
        interpreter("curator", str(tmp_path / "no-python"), {})


@pytest.mark.parametrize(
    "pythons, rows, skipped",
    [
        ({}, ["curator-style"], ["curator", "distilabel"]),
        ({"curator": "py"}, ["curator"], ["distilabel"]),
        ({"curator": "py", "distilabel": "py"}, ["curator", "distilabel"], []),
        ({"distilabel": "py"}, ["distilabel", "curator-style"], ["curator"]),
    ],
)
def test_reference_rows(pythons, rows, skipped, capsys) -> None:
    assert reference_rows(pythons) == rows
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines] == skipped  # "   skipping the <row> row: give --<row>-python ..."


def test_check_count_wants_four_calls_per_prompt() -> None:
    check_count("cli", 40, 10)
    with pytest.raises(RuntimeError, match="the curator row sent 42 chat calls for 10 prompts, not 40"):
        check_count("curator", 42, 10)


def test_arrivals_leave_probes_out(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    records = [
        {"t": 1.0, "path": "/v1/chat/completions", "body": {"messages": []}},  # curator's rate-limit probe
        {"t": 2.0, "path": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "a"}]}},
        {"t": 3.0, "path": "/v1/models", "body": None},
        {"t": 0.5, "path": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "b"}]}},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    arrivals = Arrivals(log)
    assert arrivals.take(since=1.0) == [2.0]
    assert arrivals.probes == 1


def test_curator_style_sends_three_proposals_then_an_aggregate_per_prompt(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 5)
    with OpenAITestServer(latency_s=0.001) as server:
        assert curator_style(server.base_url, str(prompts), concurrency=4) == {"rows": 5}
        bodies = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    temperatures = [b["temperature"] for b in bodies]  # the aggregator pass starts once the proposers are done
    assert sorted(temperatures[:15]) == [0.3] * 5 + [0.7] * 5 + [1.0] * 5
    assert temperatures[15:] == [0.2] * 5
    final = bodies[-1]["messages"]
    assert [m["role"] for m in final] == ["system", "user"]
    assert final[0]["content"].count("Response ") == 3
