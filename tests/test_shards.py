"""Shard files: prompt-by-prompt appends, resume after a torn write, DONE markers, input splits."""

from __future__ import annotations

import json

from moaa.fileio import write_jsonl_atomic
from moaa.work.shard_result import ShardCounts, ShardResult
from moaa.work.shards import ShardOutput, read_done, read_jsonl, reopen_failures, split_into_shards


def result(pid: str, failed: bool = False) -> tuple[list[dict], list[dict], list[dict]]:
    """(rows, trace, failures) of one prompt."""
    trace = [{"prompt_id": pid, "kind": "proposal", "text": f"t-{pid}"}]
    if failed:
        return [], trace, [{"prompt_id": pid, "stage": "sft", "reason": "aggregator_failed", "error": "x"}]
    return [{"prompt_id": pid, "text": f"row-{pid}"}], trace, []


def test_rows_are_on_disk_after_each_prompt(tmp_path):
    out = ShardOutput(tmp_path / "shard-00000")
    out.add(*result("a"))
    # Readable before close: a SIGKILL now keeps prompt "a".
    assert [r["prompt_id"] for r in read_jsonl(out.path("rows"))] == ["a"]
    assert [r["prompt_id"] for r in read_jsonl(out.path("trace"))] == ["a"]
    out.close()


def test_resume_skips_finished_prompts_and_cuts_a_torn_tail(tmp_path):
    folder = tmp_path / "shard-00000"
    out = ShardOutput(folder)
    out.add(*result("a"))
    out.add(*result("b"))
    out.close()
    # A kill in the middle of writing prompt "c": its trace line is complete, its row is torn.
    with out.path("trace").open("a") as fh:
        fh.write(json.dumps({"prompt_id": "c", "kind": "proposal", "text": "t-c"}) + "\n")
    with out.path("rows").open("a") as fh:
        fh.write('{"prompt_id": "c", "te')

    again = ShardOutput(folder)
    assert again.done_ids == {"a", "b"}
    assert out.path("rows").read_text().endswith("}\n")  # the torn line is gone from the file
    assert [r["prompt_id"] for r in read_jsonl(out.path("trace"))] == ["a", "b"]  # c is asked again
    again.add(*result("c"))
    finished = ShardResult("sft", "shard-00000.jsonl", ShardCounts(prompts=3, rows=3), {}, {}, 1.5, 2.0)
    again.finish(finished)
    assert [r["prompt_id"] for r in read_jsonl(out.path("rows"))] == ["a", "b", "c"]
    assert [r["prompt_id"] for r in read_jsonl(out.path("trace"))] == ["a", "b", "c"]
    assert read_done(folder) == finished  # typed in, typed out: JSON only inside the DONE file
    assert ShardOutput(folder).complete


def test_failures_of_an_unfinished_shard_are_retried_on_resume(tmp_path):
    """A shard stopped early (failure rate, Ctrl-C) asks its failed prompts again when resumed: the
    run's plan takes them out (reopen_failures), whatever their class."""
    folder = tmp_path / "shard-00000"
    out = ShardOutput(folder)
    out.add(*result("a"))
    out.add(*result("b", failed=True))
    out.close()
    assert reopen_failures(folder) == {"transient": 1, "other": 0, "permanent": 0}
    again = ShardOutput(folder)
    assert again.done_ids == {"a"}
    assert list(read_jsonl(again.path("failures"))) == []
    assert [r["prompt_id"] for r in read_jsonl(again.path("trace"))] == ["a"]
    again.add(*result("b", failed=True))
    again.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(), {}, {}, 0.0, 0.0))
    # Finished: the failure is part of the shard's result and stays.
    done = ShardOutput(folder)
    assert done.complete and done.done_ids == {"a", "b"}
    assert [r["prompt_id"] for r in read_jsonl(done.path("failures"))] == ["b"]
    done.close()


def test_read_jsonl_ignores_an_unterminated_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3')
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []


def test_split_into_shards_is_stable(tmp_path):
    records = [{"prompt_id": str(i)} for i in range(5)]
    paths = split_into_shards(records, tmp_path / "inputs", 2)
    assert [p.name for p in paths] == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    assert [[r["prompt_id"] for r in read_jsonl(p)] for p in paths] == [["0", "1"], ["2", "3"], ["4"]]
    before = [p.read_bytes() for p in paths]
    assert split_into_shards(records, tmp_path / "inputs", 2) == paths
    assert [p.read_bytes() for p in paths] == before


def test_atomic_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a" / "b.jsonl"
    assert write_jsonl_atomic(path, [{"x": 1}, {"x": 2}]) == 2
    assert list(read_jsonl(path)) == [{"x": 1}, {"x": 2}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.jsonl"]


def test_done_counts_follow_the_done_file(tmp_path):
    """read_done_counts parses a DONE file once, but a rewritten or removed DONE is read afresh."""
    from moaa.work.shards import read_done_counts

    out = ShardOutput(tmp_path / "shard-00000")
    out.add(*result("a"))
    assert read_done_counts(out.folder) is None
    out.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(prompts=1, rows=1), {}, {}, 1.0, 2.0))
    assert read_done_counts(out.folder) == ShardCounts(prompts=1, rows=1)
    (out.folder / "DONE").unlink()  # reopened for its transient failures
    assert read_done_counts(out.folder) is None
    again = ShardOutput(out.folder)
    again.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(prompts=1, failed=1), {}, {}, 1.0, 3.0))
    assert read_done_counts(out.folder) == ShardCounts(prompts=1, failed=1)


def test_a_prompts_row_is_written_after_the_journal_of_its_calls(tmp_path):
    """A kill right after a row lands must not lose its calls' accounting: ShardOutput writes the
    journal's waiting records before the row, though the loop's step is not over."""
    import asyncio

    from moaa.models.stats import RunStats

    async def one_prompt() -> list[str]:
        output = ShardOutput(tmp_path / "shard-00000")
        stats = RunStats()
        output.journal(stats)
        stats.record("ep", "sft.a@v1", 0.1, calls=1, prompt_tokens=5)
        journal = tmp_path / "shard-00000" / "calls.jsonl"
        before = journal.read_text()
        output.add([{"prompt_id": "p1", "messages": []}], [], [])
        after = [json.loads(line)["c"]["calls"] for line in journal.read_text().splitlines()]
        output.close()
        return [before, after]

    before, after = asyncio.run(one_prompt())
    assert before == "" and after == [1]
