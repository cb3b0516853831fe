"""A shard's result as typed values: the DONE file's layout, older DONE files, and counting prompt by prompt."""

from __future__ import annotations

import json

from moaa.rows import TraceStep
from moaa.work.shard_result import ShardCounts, ShardResult, ShardTally
from moaa.work.shards import ShardOutput, read_done

COUNTS = {"prompts": 4, "resumed": 1, "rows": 2, "failed": 1, "dropped": {"tie": 1}, "counters": {"steps": 9}}
DONE = {"stage": "preference", "shard": "shard-00003.jsonl", "counts": COUNTS, "stats": {"endpoints": {}},
        "attempt_stats": {"tags": {}}, "seconds": 1.5, "finished_at": 12.0}  # fmt: skip


def test_the_done_file_keeps_its_layout_and_reads_back_typed(tmp_path):
    result = ShardResult.from_dict(DONE)
    assert result.counts == ShardCounts(4, 1, 2, 1, {"tie": 1}, {"steps": 9}) and result.counts.finished == 4
    assert (result.stage, result.shard, result.seconds, result.finished_at) == ("preference", "shard-00003.jsonl",
                                                                                1.5, 12.0)  # fmt: skip
    out = ShardOutput(tmp_path / "shard-00003")
    out.finish(result)
    text = (tmp_path / "shard-00003" / "DONE").read_text()
    assert json.loads(text) == DONE and list(json.loads(text)) == list(DONE)  # same keys, same order
    assert read_done(tmp_path / "shard-00003") == result and not result.skipped


def test_an_older_done_file_without_attempt_stats_or_counters_still_reads():
    old = {"stage": "sft", "shard": "s", "counts": {"prompts": 2, "rows": 2, "failed": 0, "dropped": {}},
           "stats": {"endpoints": {"e": {"calls": 3}}}, "seconds": 2.0}  # fmt: skip
    result = ShardResult.from_dict(old)
    assert result.attempt_stats == old["stats"] and result.finished_at == 0.0  # every call was this attempt's
    assert (result.counts.resumed, result.counts.counters) == (0, {})


def test_the_tally_counts_rows_failures_drops_counters_and_trace_steps():
    def step(finish: str) -> TraceStep:
        return TraceStep(prompt_id="p", stage="sft", kind="proposal", text="t", finish_reason=finish)

    tally = ShardTally(prompts=3, resumed=0, rows=0, failed=0)
    tally.add(1, 0, None, {"empty_answers": 2}, [step("stop"), step("length")])
    tally.add(0, 0, "tie", {"empty_answers": 1}, [step("stop")])
    tally.add(0, 1, None, {}, [])
    assert tally.finished == 3
    assert tally.frozen() == ShardCounts(3, 0, 1, 1, {"tie": 1}, {"empty_answers": 3, "steps": 3, "truncated": 1})
    assert list(tally.frozen().counters) == ["empty_answers", "steps", "truncated"]  # the order DONE had
    assert ShardResult("sft", "s", tally.frozen(), {"big": 1}, {"big": 1}, 1.0, 2.0).without_stats().stats == {}
