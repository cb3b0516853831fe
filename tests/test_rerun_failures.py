"""Transient is retried, permanent is recorded: re-running a command asks again exactly the prompts
whose failure was transient (5xx, empty answers), finished shards included, and keeps the permanent
ones (400); against the real OpenAI-compatible test server."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from moaa.fileio import write_json_atomic, write_jsonl_atomic
from moaa.testing.openai_server import OpenAITestServer
from moaa.work.shards import ShardOutput, read_jsonl, reopen_failures
from tests.pipeline_helpers import latest_version, run_main, version_rows, write_config, write_prompts


class PerPromptFaults(OpenAITestServer):
    """Faults chosen by the question a request is about: `faults` maps "Question N:" to a fault kind;
    "aggregator-blank" answers only the aggregator's calls with an empty text."""

    def __init__(self, faults: dict[int, str], **kwargs):
        super().__init__(**kwargs)
        self.faults = faults
        self.blank_once: set[int] = set()

    def _chat(self, body, fault, auth=""):
        text = str(body.get("messages")) if isinstance(body, dict) else ""
        question = next((n for n in self.faults if f"Question {n}:" in text), None)
        kind = self.faults.get(question)
        aggregator = "Other assistants have already answered" in text
        if kind == "aggregator-blank":
            fault = "blank" if aggregator else fault
        elif kind == "aggregator-blank-once":
            if aggregator and question not in self.blank_once:
                self.blank_once.add(question)
                fault = "blank"
        elif kind is not None:
            fault = kind
        return super()._chat(body, fault, auth)


def questions(requests) -> Counter:
    """How many chat requests were about each question number."""
    found = Counter()
    for r in requests:
        match = re.search(r"Question (\d+):", str(r["body"]["messages"]))
        found[int(match.group(1))] += 1
    return found


@pytest.mark.slow
def test_rerun_reasks_only_transient_failures(tmp_path, prefect_harness, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path, 6)
    # Q1: 400 (permanent); Q2: 500 on every try (transient); Q3: the aggregator answers empty on
    # every try (transient); Q4: the aggregator answers empty once, re-asked within the retry budget.
    faults = {1: "400", 2: "500", 3: "aggregator-blank", 4: "aggregator-blank-once"}
    with PerPromptFaults(faults) as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={prompts}", "prompts.limit=null", "run.shard_size=3",
            "cache.enabled=false",  # every re-ask is a request the server sees
        )  # fmt: skip
        assert run_main("run", str(cfg)) == 0
        first = version_rows(latest_version(tmp_path / "data"), "failures")
        assert {(f["reason"], f["transient"]) for f in first} == {
            ("proposers_failed", False), ("proposers_failed", True), ("aggregator_failed", True),
        }  # fmt: skip
        assert "empty answer from aggregator" in next(f["error"] for f in first if f["reason"] == "aggregator_failed")
        assert questions(srv.requests)[4] == 3 + 2  # three proposers, the aggregator asked twice
        capsys.readouterr()
        answered = sum(r["status"] == 200 for r in srv.requests)
        srv.reset()
        srv.faults = {1: "400"}  # the outage is over; the 400 would still be a 400
        assert run_main("run", str(cfg)) == 0
        asked = questions(srv.requests)
        answered += sum(r["status"] == 200 for r in srv.requests)
    out = capsys.readouterr().out
    # The totals keep the calls the first run made for the shards this one re-opened.
    assert f"data totals: calls {answered} " in out
    assert asked == {2: 4, 3: 4}  # only the transient failures were asked again, each whole
    assert "re-run: re-asking 2 prompts that failed transiently; keeping 1 permanent failures" in out
    version = latest_version(tmp_path / "data")
    sft = version_rows(version, "sft")
    failures = version_rows(version, "failures")
    assert len(sft) == 5 and len({r["prompt_id"] for r in sft}) == 5
    assert [(f["reason"], f["transient"]) for f in failures] == [("proposers_failed", False)]
    assert not {f["prompt_id"] for f in failures} & {r["prompt_id"] for r in sft}  # never both
    assert "sft        rows      5  failed    1" in out


def write_finished_shard(out, failures):
    write_jsonl_atomic(out / "rows.jsonl", [{"prompt_id": "a"}])
    write_jsonl_atomic(out / "failures.jsonl", failures)
    stats = {"endpoints": {"test": {"calls": 7}}, "tags": {}, "latencies": {}}
    (out / "calls.jsonl").write_text(JOURNAL)
    write_json_atomic(out / "DONE", {"counts": {"prompts": 4, "rows": 1, "failed": 3}, "stats": stats})


JOURNAL = '{"endpoint": "test", "calls": 7}\n'  # stands for the shard's journal of paid calls


FAILED = {"stage": "sft", "reason": "proposers_failed"}
FAILURES = [
    FAILED | {"prompt_id": "b", "error": "server_error: HTTP 500", "transient": True},
    FAILED | {"prompt_id": "c", "error": "bad_request: HTTP 400", "transient": False},
    {"prompt_id": "d", "stage": "sft", "reason": "aggregator_failed", "error": "empty answer"},  # an older row
]


def test_reopen_keeps_permanent_failures_and_the_calls_journal(tmp_path):
    out = tmp_path / "shard-00000"
    write_finished_shard(out, FAILURES)
    assert reopen_failures(out) == {"transient": 2, "other": 0, "permanent": 1}
    assert not (out / "DONE").exists()
    assert (out / "calls.jsonl").read_text() == JOURNAL  # the re-run's DONE sums every attempt's calls
    output = ShardOutput(out)
    output.close()
    assert output.done_ids == {"a", "c"} and output.kept_failures == 1
    write_json_atomic(out / "DONE", {"counts": {"prompts": 3, "rows": 1, "failed": 2}, "stats": {}})
    assert reopen_failures(out) == {"transient": 0, "other": 0, "permanent": 1}  # a finished shard stays so
    assert (out / "DONE").exists()


@pytest.mark.parametrize("finished, everything", [(False, False), (True, True)])
def test_a_stopped_shard_or_a_stage_that_made_nothing_asks_every_failure_again(tmp_path, finished, everything):
    out = tmp_path / "shard-00000"
    write_finished_shard(out, FAILURES)
    if not finished:
        (out / "DONE").unlink()
    assert reopen_failures(out, everything) == {"transient": 2, "other": 1, "permanent": 0}
    assert list(read_jsonl(out / "failures.jsonl")) == []
