"""Every prompt accounted for: faults of every kind, failure rows, and the failure-rate stop.

The runs go through `moaa run` in this process (the session's Prefect test harness) against the
fault-injecting OpenAI test server on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from moaa.config import PromptSourceConfig
from moaa.sources import load_prompts
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import ROOT
from tests.pipeline_helpers import (
    assert_one_line_error,
    latest_version,
    run_main,
    version_rows,
    work_rows,
    write_config,
    write_prompts,
)

FAULTS = ("429", "500", "503", "hang", "garbage", "empty", "truncated", "drop")


def test_faults_of_every_kind_leave_every_prompt_accounted_for(tmp_path, prefect_harness, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts = load_prompts(PromptSourceConfig(path=str(ROOT / "configs/prompts/default.jsonl"), limit=24)).prompts
    # Two prompts no retry can save: every call that carries their question fails.
    poisoned = {p.prompt_id: next(m["content"] for m in p.messages if m["role"] == "user") for p in prompts[:2]}

    def responder(request: dict) -> None:
        if any(q in m["content"] for m in request["messages"] for q in poisoned.values()):
            raise RuntimeError("poisoned prompt")
        return None

    server = OpenAITestServer(
        fault_rate=0.1, fault_mix=FAULTS, seed=0, retry_after_s=0.05, hang_s=3, responder=responder
    )
    with server as srv:
        srv.set_script(FAULTS)  # each kind once first, then ~10% at random
        cfg = write_config(
            tmp_path, srv.base_url, "prompts.limit=24", "run.shard_size=6",
            "endpoints.test.max_retries=2", "endpoints.test.timeout_s=1", "endpoints.test.max_concurrency=8",
        )  # fmt: skip
        assert run_main("run", str(cfg)) == 0
        requests = [r for r in srv.requests if r["path"] == "/v1/chat/completions"]
    out = capsys.readouterr().out

    seen = Counter(r["fault"] for r in requests)
    assert set(FAULTS) <= set(seen), seen  # the run met every kind of fault
    version = latest_version(tmp_path / "data")
    sft = version_rows(version, "sft")
    failures = version_rows(version, "failures")
    ids = [r["prompt_id"] for r in sft]
    assert len(ids) == len(set(ids))  # no prompt twice
    assert sorted(ids + [f["prompt_id"] for f in failures]) == sorted(p.prompt_id for p in prompts)
    assert set(poisoned) <= {f["prompt_id"] for f in failures}
    for failure in failures:
        assert failure["stage"] == "sft" and failure["reason"] and failure["error"]
    poisoned_rows = [f for f in failures if f["prompt_id"] in poisoned]
    assert [f["reason"] for f in poisoned_rows] == ["proposers_failed"] * 2
    # The last error: usually the responder's 500, or a random fault that hit the last retry.
    last_error = r"(server_error|timeout|rate_limited|malformed|connection): endpoint 'test' \(test-model\): .+"
    assert all(re.fullmatch(last_error, f["error"], re.S) for f in failures), failures

    by_reason = Counter(f"sft:{f['reason']}" for f in failures)
    assert "failures: " + ", ".join(f"{k} {v}" for k, v in by_reason.items()) in out
    assert f"rows {len(sft):>6}  failed {len(failures):>4}" in out
    manifest = json.loads((version / "moaa_manifest.json").read_text())
    assert manifest["counts"]["failures_by_reason"] == {k.split(":")[1]: v for k, v in by_reason.items()}
    # Retried calls never show up twice in the trace: one step per agent per turn.
    trace = version_rows(version, "trace")
    steps = Counter((t["prompt_id"], t["turn"], t["kind"], t["layer"], t["index"]) for t in trace)
    assert max(steps.values()) == 1


def test_a_broken_endpoint_stops_the_run_and_keeps_finished_rows(tmp_path, prefect_harness, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        # The first shard (2 prompts x 4 calls) is answered, then every call fails.
        srv.set_script([None] * 8 + ["500"] * 1000)
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={write_prompts(tmp_path, 12)}", "prompts.limit=null",
            "run.shard_size=2", "run.max_parallel_shards=1",
            "endpoints.test.max_retries=0", "run.max_failure_rate=0.3", "run.min_prompts_for_failure_rate=2",
        )  # fmt: skip
        rc = run_main("run", str(cfg))
        # Shard 2's two prompts fail together: the guard sees 1 or 2 of them next to shard 1's rows.
        assert re.fullmatch(
            r"error: sft: (1 of 3|2 of 4) prompts failed \(limit run.max_failure_rate=0.3\); commonest cause "
            r"\(\d of \d\): proposers_failed: .*HTTP 500.* \(endpoint 'test' at http://127\.0\.0\.1:\d+/v1\); "
            r"finished rows are kept — fix the cause \(failures: .*/sft/shard-\*/failures\.jsonl\) and run the same "
            r"command again to resume",
            assert_one_line_error((rc, capsys.readouterr().err), 4),
        )
        assert not (tmp_path / "data" / "test-run").exists()  # no version of a stopped run
        kept = work_rows(tmp_path / "work", "sft")
        assert len(kept) == 2  # the first shard
        broken = len(srv.requests)
        # Stopped at the second shard (3 proposers per prompt), asked nothing more: the guard may stop
        # it once its first prompt has failed, before the second prompt's calls go out.
        assert broken in (8 + 3, 8 + 2 * 3), broken

        # Fixed: the same command finishes the run without asking for what is done.
        srv.set_script([])
        assert run_main("run", str(cfg)) == 0
        asked_again = srv.requests[broken:]
    assert len(asked_again) == 10 * 4
    assert {r["fault"] for r in asked_again} == {None}
    version = latest_version(tmp_path / "data")
    assert len(version_rows(version, "sft")) == 12
    assert version_rows(version, "failures") == []


DEAD = "http://127.0.0.1:1/v1"  # nothing listens on port 1: every call is refused


def test_a_dead_proposer_endpoint_fails_the_run_by_default(tmp_path, prefect_harness, capsys, monkeypatch):
    """One of two proposer endpoints dead: every row would be one model's answer relabelled as MoA.
    min_answers unset asks every proposer to answer, so each prompt fails and the run says why."""
    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"endpoints.fa={{base_url: '{DEAD}', model: fa-model, max_retries: 0}}",
            "sft.proposers.2.endpoint=fa",
        )  # fmt: skip
        rc = run_main("run", str(cfg))
    line = assert_one_line_error((rc, capsys.readouterr().err), 4)
    head = "error: sft: all 4 prompts failed; commonest cause (4 of 4 failed prompts): proposers_failed: "
    assert line.startswith(head)
    assert "endpoint 'fa' (fa-model): connection failed" in line and f"(endpoint 'fa' at {DEAD})" in line
    assert not (tmp_path / "data" / "test-run").exists()


def test_an_endpoint_that_answered_nothing_fails_the_run_even_when_rows_were_allowed(
    tmp_path, prefect_harness, capsys, monkeypatch
):
    """min_answers=1 lets rows go on without a proposer, but not without one that never answered."""
    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"endpoints.fa={{base_url: '{DEAD}', model: fa-model, max_retries: 0}}",
            "sft.proposers.2.endpoint=fa", "sft.min_answers=1",
        )  # fmt: skip
        rc = run_main("run", str(cfg))
    line = assert_one_line_error((rc, capsys.readouterr().err), 4)
    assert line.startswith(f"error: sft: endpoint 'fa' failed all 4 calls it was asked (endpoint 'fa' at {DEAD}); ")
    assert "last error: connection: endpoint 'fa' (fa-model): connection failed" in line
    assert "no data set version was written" in line
    assert not (tmp_path / "data" / "test-run").exists()


def test_allowed_degraded_rows_are_counted_and_traced(tmp_path, prefect_harness, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path, 4)

    def flaky(request: dict) -> None:  # proposer "fa" cannot answer question 0
        if "Question 0:" in request["messages"][-1]["content"]:
            raise RuntimeError("cannot answer")

    with OpenAITestServer() as srv, OpenAITestServer(responder=flaky) as other:
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={prompts}", "prompts.limit=null",
            f"endpoints.fa={{base_url: '{other.base_url}', model: fa-model, max_retries: 0}}",
            "sft.proposers.2.endpoint=fa", "sft.min_answers=2",
        )  # fmt: skip
        assert run_main("run", str(cfg)) == 0
    out = capsys.readouterr().out
    assert "1 rows from fewer answers than configured (sft.min_answers)" in out
    version = latest_version(tmp_path / "data")
    assert len(version_rows(version, "sft")) == 4 and version_rows(version, "failures") == []
    finals = [t for t in version_rows(version, "trace") if t["kind"] == "aggregate"]
    degraded = [json.loads(t["meta"])["degraded"] for t in finals if "degraded" in (t["meta"] or "")]
    assert degraded == [["layer 1: 2 of 3 proposers answered"]]
    card = (version / "README.md").read_text()
    assert "Rows made by fewer answers than a layer asked for" in card and "): 1." in card


def test_a_dead_judge_among_judges_fails_the_run(tmp_path, prefect_harness, capsys, monkeypatch):
    """The preference stage's rows made with one judge of two look like data judged by two."""
    from tests.pipeline_helpers import verdict_responder

    monkeypatch.chdir(tmp_path)
    with OpenAITestServer(responder=verdict_responder) as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"endpoints.fj={{base_url: '{DEAD}', model: fj-model, max_retries: 0}}",
            "preference.enabled=true", "preference.policy={endpoint: test}", "preference.samples=2",
            "preference.scorer.judges=[{endpoint: test}, {endpoint: fj}]", "preference.min_margin=0",
        )  # fmt: skip
        rc = run_main("run", str(cfg))
    line = assert_one_line_error((rc, capsys.readouterr().err), 4)
    assert line.startswith("error: preference: endpoint 'fj' failed all ")
    assert f"(endpoint 'fj' at {DEAD})" in line


def test_a_failure_rate_stop_names_the_cause_found_in_earlier_shards(tmp_path, prefect_harness, capsys, monkeypatch):
    """A shard that stops on its first prompt (a success after a finished shard's failures) named no
    cause and no place: 'sft: 2 of 3 prompts failed (limit ...); finished rows are kept'."""
    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        srv.set_script(["500"] * 6)  # the first shard's two prompts, three proposers each
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={write_prompts(tmp_path, 6)}", "prompts.limit=null",
            "run.shard_size=2", "run.max_parallel_shards=1", "endpoints.test.max_retries=0",
            "run.max_failure_rate=0.5", "run.min_prompts_for_failure_rate=3",
        )  # fmt: skip
        line = assert_one_line_error((run_main("run", str(cfg)), capsys.readouterr().err), 4)
    work = next((tmp_path / "work" / "test-run").iterdir())
    assert line == (
        "error: sft: 2 of 3 prompts failed (limit run.max_failure_rate=0.5); commonest cause (2 of 2): "
        f"proposers_failed: server_error: endpoint 'test' (test-model): HTTP 500 Injected fault 500. (endpoint "
        f"'test' at {srv.base_url}); finished rows are kept — fix the cause (failures: "
        f"{work}/sft/shard-*/failures.jsonl) and run the same command again to resume"
    )
