"""The whole pipeline through the Prefect flow against a local OpenAI-compatible server:
SFT shards, preference shards, a data set version that loads with `load_dataset`."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from moaa.testing.openai_server import OpenAITestServer
from moaa.work.summary import format_summary
from tests.conftest import make_config
from tests.pipeline_helpers import version_rows

CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
ASPECTS = ["instruction_following", "honesty", "truthfulness", "helpfulness"]


def responder(request: dict) -> str | None:
    """Judge calls get a verdict whose rating depends on the candidate's text; others the default."""
    last = request["messages"][-1]["content"]
    shown = CANDIDATE_RE.findall(last)
    if not shown:
        return None
    rating = 1 + int(hashlib.sha256(shown[0][1].encode()).hexdigest(), 16) % 5
    return json.dumps({k: {"rationale": f"{k} is {rating}", "rating": rating} for k in ASPECTS})


def run(config):
    from prefect import flow

    from flows.pipeline_flow import run_pipeline

    @flow
    def pipeline_flow():
        return run_pipeline(config)

    return pipeline_flow()


def test_sft_and_preference_make_a_loadable_version(tmp_path, prefect_harness):
    from datasets import load_dataset

    with OpenAITestServer(responder=responder) as srv:
        config = make_config(
            tmp_path,
            srv.base_url,
            "prompts.limit=6",
            "preference.enabled=true",
            "preference.policy.endpoint=test",
            "preference.samples=4",
            "preference.scorer.judges=[{endpoint: test}]",
            "preference.min_margin=0.5",
            "output.test_size=0.3",
        )
        summary = run(config)
        first_requests = len(srv.requests)
        text = format_summary(summary)

        # 6 prompts x (3 proposers + 1 aggregator); 6 prompts x (one n=4 call + one judge call per candidate)
        sft_calls = sum(
            1
            for r in srv.requests
            if "<candidate" not in r["body"]["messages"][-1]["content"] and r["body"].get("n", 1) == 1
        )
        assert sft_calls == 24
        assert summary["stages"]["sft"]["rows"] == 6 and summary["stages"]["sft"]["failed"] == 0
        assert summary["per_prompt"]["calls"] == 4.0
        assert "per prompt (moa): 4.0 calls" in text and "tok/s" in text

        path = summary["version_path"]
        sft = load_dataset(path, "sft")
        assert sum(len(split) for split in sft.values()) == 6
        row = next(iter(sft.values()))[0]
        assert [m["role"] for m in row["messages"]][-1] == "assistant"
        assert row["method"] == "moa" and row["models"] == ["test-model"]
        dpo_rows = summary["stages"]["preference"]["rows"]
        assert dpo_rows >= 1
        dpo = load_dataset(path, "dpo")
        pair = next(iter(dpo.values()))[0]
        assert pair["score_chosen"] - pair["score_rejected"] >= 0.5
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
        trace = load_dataset(path, "trace")
        kinds = {k for split in trace.values() for k in split["kind"]}
        assert {"proposal", "aggregate"} <= kinds
        manifest = json.loads((tmp_path / "data/test-run/v1/moaa_manifest.json").read_text())
        assert manifest["config"]["sft"]["method"] == "moa"

        # The same flow again (a scheduled run of an unchanged config): zero model calls, no new version.
        summary2 = run(config)
        assert len(srv.requests) == first_requests
        assert summary2["up_to_date"] and summary2["version_path"] == str(tmp_path / "data/test-run/v1")
        assert not (tmp_path / "data/test-run/v2").exists()


def test_unanswerable_prompts_are_failures_not_silence(tmp_path, prefect_harness):
    """Every call fails: each prompt is a failure record in the work folder, and the run raises
    instead of writing a version that holds nothing but failures."""
    from moaa.work.outcome import StageMadeNothing
    from moaa.work.shards import read_jsonl

    with OpenAITestServer() as srv:
        srv.set_script(["500"] * 1000)  # every call fails
        config = make_config(
            tmp_path,
            srv.base_url,
            "prompts.limit=3",
            "endpoints.test.max_retries=1",
            "run.max_failure_rate=1.0",
        )
        with pytest.raises(StageMadeNothing, match=r"^sft: all 3 prompts failed; .*proposers_failed: .*HTTP 500"):
            run(config)
    failures = [f for path in (tmp_path / "work").rglob("failures.jsonl") for f in read_jsonl(path)]
    assert sorted(f["reason"] for f in failures) == ["proposers_failed"] * 3
    assert all("HTTP 500" in f["error"] for f in failures)
    assert not (tmp_path / "data" / "test-run").exists()


# Trace step kinds per prompt for each method (3 proposers; self-moa 6 samples; seq 5 samples, window 4).
SHAPES: dict[str, dict[str, Any]] = {
    "single": {"answer": lambda n: n == 1, "aggregate": lambda n: n == 0, "proposal": lambda n: n == 0},
    "moa-lite": {"proposal": lambda n: n == 3, "aggregate": lambda n: n == 1},
    "self-moa": {"sample": lambda n: n == 6, "aggregate": lambda n: n == 1, "proposal": lambda n: n == 0},
    "self-moa-seq": {"sample": lambda n: n == 5, "synthesis": lambda n: n >= 1, "aggregate": lambda n: n == 1},
    "smoa": {"proposal": lambda n: n >= 3, "moderator": lambda n: n >= 1, "aggregate": lambda n: n == 1},
}


@pytest.mark.parametrize("method", ["single", "moa-lite", "self-moa", "self-moa-seq", "smoa"])
def test_every_method_runs_through_the_flow(tmp_path, prefect_harness, method):
    with OpenAITestServer() as srv:
        config = make_config(
            tmp_path,
            srv.base_url,
            f"sft.method={method}",
            "prompts.limit=2",
            "sft.seq.samples=5",
            "sft.seq.window=4",
            "sft.seq.new_per_step=2",
        )
        summary = run(config)
    assert summary["stages"]["sft"]["rows"] == 2, summary
    # The method's own shape, read from the version's trace: a single-model answer in place of the
    # mixture (or a mixture in place of the baseline) fails here, not only the row count.
    version = Path(summary["version_path"])
    trace, rows = version_rows(version, "trace"), version_rows(version, "sft")
    for row in rows:
        steps = [t for t in trace if t["prompt_id"] == row["prompt_id"] and t["stage"] == "sft"]
        kinds = Counter(t["kind"] for t in steps)
        final = [t for t in steps if t["kind"] == ("answer" if method == "single" else "aggregate")]
        assert len(final) == 1 and row["messages"][-1]["content"] == final[0]["text"], (method, kinds)
        assert all(check(kinds.get(k, 0)) for k, check in SHAPES[method].items()), (method, kinds)
